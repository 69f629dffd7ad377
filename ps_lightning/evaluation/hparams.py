"""The evaluation's HParams rows: one per model, its method and role first, then only the
options that acted on that run, under a trial name that starts with the model and its method
(TensorBoard cuts long trial names, and the run paths of Naive PS and PS differ only at the
end)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ps_lightning.evaluation.report import COLUMNS, finite

HParam = bool | int | float | str
HParamRow = tuple[dict[str, HParam], dict[str, float]]
# PSUnlearnModule's ``method`` values as the README names the methods (``naive+ps``: PS epochs
# starting from Naive PS's head).
PS_METHODS = {
    "naive": "Naive PS",
    "ps": "PS",
    "naive+ps": "Naive PS + PS",
    "block": "PS module, last block retrained",
}
# Which of PSUnlearnModule's options and record entries each of its stages reads or writes
# (ps_module.py: `_naive_surgery`, then the PS epochs), so that a Naive PS row shows no epochs
# or early stop and a PS row no pseudo-inverse cutoff. Kept in step with the module by
# tests/test_evaluation.py (this room sits below prototype_surgery and cannot import it).
SURGERY_OPTIONS = ("rcond", "surgery_bias", "use_index", "cumulative")
EPOCH_OPTIONS = (
    "epochs",
    "lr",
    "weight_decay",
    "optimizer",
    "loss",
    "top_k",
    "trainable",
    "early_stop",
    "retain_anchor",
)
ANCHOR_OPTIONS = ("anchor_size", "anchor_target")  # read only with retain_anchor > 0
# Read by method block alone (prototype_surgery.options.BLOCK_OPTIONS, which this room sits below;
# tests/test_evaluation.py keeps the two equal).
BLOCK_OPTIONS = (
    "block_epochs",
    "block_lr",
    "block_batch_size",
    "block_min_steps",
    "block_stop_rows",
)
BLOCK_RECORD = ("block_target_retain_acc", "block_retain_acc", "block_steps")
SURGERY_RECORD = ("index_built", "surgery_rtol", "surgery_rank")
EPOCH_RECORD = (
    "early_stop_used",
    "stopped_at_epoch",
    "restored_step",
    "ps_kept_start_state",
    "early_stop_outcome",
)
# Set from the data, equal in every row: not a choice anyone made.
DATA_OPTIONS = ("num_classes", "in_channels")
# The original and retrained models are trained, not unlearned.
TRAINED = "training"
# The HParams table's first columns: what made each row and what it is for.
FIRST_COLUMNS = ("method", "role")


def role(name: str, summary: dict[str, Any], original: str | None) -> str:
    """What a row is for: the reference rows (``original``, ``retrain``) against the
    ``unlearned`` ones the reader compares (``evaluated``: a model without a record)."""
    if name == summary["retrain"]:
        return "retrain"
    if name == original:
        return "original"
    return "unlearned" if summary["models"][name]["unlearning"] else "evaluated"


def method_label(record: dict[str, Any] | None) -> str:
    """The unlearning method as people name it: PS's by its ``method`` option, any other by
    its class; ``training`` for a model no method made."""
    if not record:
        return TRAINED
    return PS_METHODS.get(method_run(record), record["method"])


def method_run(record: dict[str, Any]) -> str | None:
    """PS's ``method`` as it ran: ``auto`` resolved by the request (the record says which)."""
    return record.get("method_run") or record["config"].get("method")


def not_applied(config: dict[str, Any]) -> set[str]:
    """The option and record keys of a run that did not act on it: for PS, the stage it did not
    run (Naive PS trains no epoch; PS alone does no surgery) and the anchor's settings without
    an anchor; the data's shape for every method."""
    skipped = set(DATA_OPTIONS)
    method = config.get("method")
    if method not in PS_METHODS:
        return skipped
    if method == "block":
        kept = ("weight_decay", "optimizer")
        epochs = {*EPOCH_OPTIONS, *ANCHOR_OPTIONS, *EPOCH_RECORD} - set(kept)
        return skipped | {*SURGERY_OPTIONS, *SURGERY_RECORD, *epochs}
    skipped |= {*BLOCK_OPTIONS, *BLOCK_RECORD}
    if method == "ps":
        skipped |= {*SURGERY_OPTIONS, *SURGERY_RECORD}
    if method == "naive":
        skipped |= {*EPOCH_OPTIONS, *ANCHOR_OPTIONS, *EPOCH_RECORD}
    if not config.get("retain_anchor"):
        skipped |= set(ANCHOR_OPTIONS)
    return skipped


def _params(name: str, summary: dict[str, Any], original: str | None) -> dict[str, Any]:
    record = summary["models"][name]["unlearning"] or {}
    params: dict[str, Any] = {
        "method": method_label(record),
        "role": role(name, summary, original),
        "model": name,
    }
    if not record:
        return params
    skipped = not_applied({**record["config"], "method": method_run(record)})
    # ``method`` is shown as the label above; keys with a leading underscore are jsonargparse's
    # bookkeeping, not options.
    params.update(
        {
            key: value
            for key, value in record["config"].items()
            if key != "method" and not key.startswith("_") and key not in skipped
        }
    )
    params.update(
        {
            f"record/{key}": value
            for key, value in record.items()
            if key not in ("method", "config", "original_ckpt") and key not in skipped
        }
    )
    return params


def hparam_rows(summary: dict[str, Any], original: str | None) -> dict[str, HParamRow]:
    """Per model, its HParams row: ``(hparams, metrics)``.

    The hparams are the method (`method_label`), role and name of the model, then, for an
    unlearned model, the options that acted on the run and what its record says it did
    (``record/<key>``). Values keep their type (a number is a number); a value of another kind
    (a list) is written as JSON, and a key whose values are numbers in one row and text in
    another is text in every row, as TensorBoard gives a column one type.
    """
    rows: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
    for name, result in summary["models"].items():
        params = {
            key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in _params(name, summary, original).items()
            if value is not None
        }
        gaps = result.get("gap_to_retrain", {})
        table_row = {
            **{key: result["metrics"].get(key) for _, key, _ in COLUMNS},
            **{key: gaps.get(key) for key in ("avg_gap", "avg_gap_without_mia")},
            "fit_seconds": (result.get("timing") or {}).get("fit_seconds"),
        }
        numbers = {f"hparams/{key}": finite(value) for key, value in table_row.items()}
        metrics = {key: value for key, value in numbers.items() if value is not None}
        rows[name] = (params, metrics)
    textual = {
        key
        for params, _ in rows.values()
        for key, value in params.items()
        if isinstance(value, str)
    }
    return {
        name: ({k: str(v) if k in textual else v for k, v in params.items()}, metrics)
        for name, (params, metrics) in rows.items()
    }


def trial_name(name: str, params: dict[str, HParam], log_dir: Path) -> str:
    """The row's name in TensorBoard's HParams table: the model and its method first, so that
    a cut name still tells them apart; the evaluation's folder last, so that the rows of two
    evaluations stay apart (TensorBoard merges sessions of one name into one row)."""
    return f"{name} · {params['method']} · {log_dir}"


def _edited(summary: Summary, edit: Callable[[HParamsPluginData], None]) -> Summary:
    """``summary`` (one of torch's `hparams` summaries) with its plugin data changed by
    ``edit``: torch's writer sets neither trial names nor column order, and tensorboard's own
    writer of them needs TensorFlow."""
    (value,) = summary.value
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    edit(data)
    value.metadata.plugin_data.content = data.SerializeToString()
    return summary


def _lead_columns(data: HParamsPluginData) -> None:
    # TensorBoard orders the columns by `differs` (columns whose values differ between rows
    # first), then by name; torch marks none, so the order would be alphabetical. Method and
    # role do differ between the rows: marked so, they come first.
    for info in data.experiment.hparam_infos:
        info.differs = info.name in FIRST_COLUMNS


def _name_session(group_name: str, data: HParamsPluginData) -> None:
    # TensorBoard shows a session group's name as its trial id, the run path when empty.
    data.session_start_info.group_name = group_name


def write_hparams(log_dir: Path, rows: dict[str, HParamRow]) -> None:
    """One experiment (every column of every row) in ``hparams/``, one session per model below
    it: TensorBoard takes the columns from the first experiment it finds, so a row written with
    its own (the original's has no PS options) would hide the others' columns. Method and role
    are its first columns, each session is named by `trial_name`."""
    all_params = {k: v for params, _ in rows.values() for k, v in params.items()}
    all_metrics = {k: v for _, metrics in rows.values() for k, v in metrics.items()}
    experiment = _edited(hparams_summaries(all_params, all_metrics)[0], _lead_columns)
    with SummaryWriter(log_dir=str(log_dir / "hparams")) as writer:
        writer.file_writer.add_summary(experiment)
    for name, (params, metrics) in rows.items():
        _, start, end = hparams_summaries(params, metrics)
        start = _edited(start, functools.partial(_name_session, trial_name(name, params, log_dir)))
        with SummaryWriter(log_dir=str(log_dir / "hparams" / name)) as writer:
            writer.file_writer.add_summary(start)
            writer.file_writer.add_summary(end)
            for key, value in metrics.items():
                writer.add_scalar(key, value)
