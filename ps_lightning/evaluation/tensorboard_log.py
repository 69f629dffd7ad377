"""What `ps-lightning test` shows in TensorBoard, built from its summary (``metrics.json``).

Scalars (any logger):

- ``eval/<model>/metric/<name>``: each number of the model's table row (accuracies, attacks,
  probes, relearn steps), the value the table shows;
- ``eval/<model>/gap_to_retrain/<name>``: its absolute gap to the retrained model, with
  ``avg_gap`` and ``avg_gap_without_mia``;
- ``eval/<model>/fit_seconds``: the fit time of the run that made the model;
- ``eval/<model>/class_acc/<split>``: accuracy per class on the test, forget and retain splits,
  **the step being the class index** (a class the split holds no sample of is left out).

TensorBoard only:

- images ``comparison/vs_retrain`` (the table as a chart), ``confusion_matrix/<model>`` (test
  split, counts in the cells) and ``per_class_accuracy/<model>`` (the original before, the model
  after, the retrained model as the target);
- text ``table``: the markdown table of ``table.md``;
- HParams: one run per model (``hparams/<model>``, the original and retrained ones for
  reference) with its unlearning configuration and record as typed values (numbers stay
  numbers) and the table's numbers as ``hparams/<name>``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ps_lightning.evaluation.figures import (
    comparison_figure,
    confusion_matrix_figure,
    per_class_accuracy_figure,
)
from ps_lightning.evaluation.report import COLUMNS
from ps_lightning.metrics import PER_CLASS_SPLITS

# The table's columns the comparison chart draws, by key: the shares in [0, 1] (relearn steps,
# a count, are not).
COMPARED = {key: header for header, key, digits in COLUMNS if digits > 0}
HParam = bool | int | float | str


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def table_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """Tag → value of every number the comparison table holds, per model (missing and NaN
    values left out)."""
    scalars: dict[str, float] = {}
    for name, result in summary["models"].items():
        groups = {
            "metric": {k: v for k, v in result["metrics"].items() if not isinstance(v, list)},
            "gap_to_retrain": result.get("gap_to_retrain", {}),
        }
        for group, values in groups.items():
            for key, value in values.items():
                if (number := _finite(value)) is not None:
                    scalars[f"eval/{name}/{group}/{key}"] = number
        if (seconds := _finite((result.get("timing") or {}).get("fit_seconds"))) is not None:
            scalars[f"eval/{name}/fit_seconds"] = seconds
    return scalars


def per_class_scalars(summary: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Class index (the step) → tag → accuracy of that class, per model and split."""
    steps: dict[int, dict[str, float]] = {}
    for name, result in summary["models"].items():
        for split in PER_CLASS_SPLITS:
            for class_index, value in enumerate(result["metrics"][f"class_{split}_acc"]):
                if (number := _finite(value)) is not None:
                    steps.setdefault(class_index, {})[f"eval/{name}/class_acc/{split}"] = number
    return steps


def _role(name: str, summary: dict[str, Any], original: str | None) -> str:
    if name == summary["retrain"]:
        return "retrain"
    if name == original:
        return "original"
    return "unlearned" if summary["models"][name]["unlearning"] else "evaluated"


def hparam_rows(
    summary: dict[str, Any], original: str | None
) -> dict[str, tuple[dict[str, HParam], dict[str, float]]]:
    """Per model, its HParams row: ``(hparams, metrics)``.

    The hparams are the model's name and role, and for an unlearned model its method's class,
    its configuration and what its record says it did (``record/<key>``). Values keep their
    type (a number is a number); a value of another kind (a list) is written as JSON, and a
    key whose values are numbers in one row and text in another is text in every row, as
    TensorBoard gives a column one type.
    """
    rows: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
    for name, result in summary["models"].items():
        params: dict[str, Any] = {"model": name, "role": _role(name, summary, original)}
        record = result["unlearning"] or {}
        if record:
            params["module"] = record["method"]
            # Keys with a leading underscore are jsonargparse's bookkeeping, not options.
            params.update({k: v for k, v in record["config"].items() if not k.startswith("_")})
            params.update(
                {
                    f"record/{key}": value
                    for key, value in record.items()
                    if key not in ("method", "config", "original_ckpt")
                }
            )
        params = {
            key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in params.items()
            if value is not None
        }
        gaps = result.get("gap_to_retrain", {})
        table_row = {
            **{key: result["metrics"].get(key) for _, key, _ in COLUMNS},
            **{key: gaps.get(key) for key in ("avg_gap", "avg_gap_without_mia")},
            "fit_seconds": (result.get("timing") or {}).get("fit_seconds"),
        }
        numbers = {f"hparams/{key}": _finite(value) for key, value in table_row.items()}
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


def _write_hparams(
    log_dir: Path, rows: dict[str, tuple[dict[str, HParam], dict[str, float]]]
) -> None:
    # One experiment (every column of every row) in ``hparams/``, one session per model below
    # it: TensorBoard takes the columns from the first experiment it finds, so a row written
    # with its own (the original's has no PS options) would hide the others' columns.
    all_params = {k: v for params, _ in rows.values() for k, v in params.items()}
    all_metrics = {k: v for _, metrics in rows.values() for k, v in metrics.items()}
    experiment, _, _ = hparams_summaries(all_params, all_metrics)
    with SummaryWriter(log_dir=str(log_dir / "hparams")) as writer:
        writer.file_writer.add_summary(experiment)
    for name, (params, metrics) in rows.items():
        _, start, end = hparams_summaries(params, metrics)
        with SummaryWriter(log_dir=str(log_dir / "hparams" / name)) as writer:
            writer.file_writer.add_summary(start)
            writer.file_writer.add_summary(end)
            for key, value in metrics.items():
                writer.add_scalar(key, value)


def _per_class_series(
    summary: dict[str, Any], name: str, split: str, original: str | None
) -> dict[str, list[float | None]]:
    """The original before, the model after, the retrained model as the target (each once)."""
    labels: dict[str, str] = {}
    for model, role in ((original, "before"), (name, "after"), (summary["retrain"], "target")):
        if model is not None and model not in labels:
            labels[model] = f"{model} ({role})"
    return {
        label: summary["models"][model]["metrics"][f"class_{split}_acc"]
        for model, label in labels.items()
    }


def log_to_tensorboard(
    writer: SummaryWriter,
    summary: dict[str, Any],
    test_confusion: dict[str, torch.Tensor],
    table: str,
    original: str | None,
) -> None:
    """The figures, the table as text and the HParams rows of an evaluation (the scalars go
    through the run's logger: `table_scalars`, `per_class_scalars`)."""
    models = summary["models"]
    retrain = summary["retrain"]
    writer.add_text("table", table)
    writer.add_figure(
        "comparison/vs_retrain",
        comparison_figure(
            {name: result["metrics"] for name, result in models.items()},
            COMPARED,
            retrain,
            {
                name: result["gap_to_retrain"]["avg_gap"]
                for name, result in models.items()
                if name != retrain and "gap_to_retrain" in result
            },
        ),
    )
    for name in models:
        writer.add_figure(
            f"confusion_matrix/{name}",
            confusion_matrix_figure(test_confusion[name], f"{name}: test split"),
        )
        writer.add_figure(
            f"per_class_accuracy/{name}",
            per_class_accuracy_figure(
                {
                    split: _per_class_series(summary, name, split, original)
                    for split in PER_CLASS_SPLITS
                },
                f"{name}: accuracy per class",
                summary["target_classes"],
            ),
        )
    _write_hparams(Path(writer.log_dir), hparam_rows(summary, original))
