"""What users measure (docs/design.md §4): metric functions, and `ps-lightning test` on real
checkpoints."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit
from unlearning_fixtures import (
    Original,
    load_checkpoint,
    logged_text,
    naive_reference,
    nothing_written,
    original,
    ps_reference,
    retrain_ckpt,
    run_cli,
    tensorboard_events,
)

from ps_lightning.data import DigitsDataModule
from ps_lightning.evaluation.figures import confusion_matrix, confusion_matrix_figure
from ps_lightning.evaluation.hparams import (
    ANCHOR_OPTIONS,
    BLOCK_OPTIONS,
    DATA_OPTIONS,
    EPOCH_OPTIONS,
    EPOCH_RECORD,
    SURGERY_OPTIONS,
    SURGERY_RECORD,
    hparam_rows,
)
from ps_lightning.evaluation.report import COLUMNS, markdown_table
from ps_lightning.metrics import (
    GAP_METRICS,
    accuracy,
    gaps_to_retrain,
    mia_efficacy,
    per_class_accuracy,
    split_metrics,
    svc_attack,
)
from ps_lightning.models.classifier import load_classifier
from ps_lightning.prototype_surgery import PSUnlearnModule
from ps_lightning.prototype_surgery import options as options_module

__all__ = ["naive_reference", "original", "ps_reference", "retrain_ckpt"]  # fixtures used below


def _logits_predicting(predictions: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float() * 5


# --------------------------------------------------------------------------- metric functions


def test_accuracy_counts_correct_predictions() -> None:
    logits = _logits_predicting([0, 1, 2, 2], 3)
    assert accuracy(logits, torch.tensor([0, 1, 2, 0])) == 0.75
    assert math.isnan(accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)))


def test_per_class_accuracy_and_an_absent_class() -> None:
    logits = _logits_predicting([0, 0, 1, 2, 2], 4)
    per_class = per_class_accuracy(logits, torch.tensor([0, 1, 1, 2, 2]), 4)
    assert per_class[:3] == [1.0, 0.5, 1.0]
    assert math.isnan(per_class[3])  # no test sample of class 3: unknown, not 0


def test_confusion_matrix_rows_are_true_classes() -> None:
    matrix = confusion_matrix(_logits_predicting([0, 2, 1, 1], 3), torch.tensor([0, 1, 1, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_confusion_matrix_figure_writes_each_count_in_its_cell() -> None:
    matrix = torch.tensor([[5, 0, 1], [2, 7, 0], [0, 3, 4]])

    figure = confusion_matrix_figure(matrix, "model")

    (axes, _colorbar) = figure.axes
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts
    }
    assert cells == {
        (row, column): str(int(matrix[row, column])) for row in range(3) for column in range(3)
    }


def _scores(mean: float, spread: float, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return mean + spread * torch.randn(count, generator=generator, dtype=torch.float64)


def test_mia_calls_non_member_like_samples_non_members() -> None:
    members = _scores(0.95, 0.03, 400, 0)  # confident on training samples
    nonmembers = _scores(0.60, 0.10, 100, 1)  # less so on held-out ones

    def efficacy(targets: torch.Tensor) -> float:
        no_labels = (torch.zeros(len(members)), torch.zeros(len(nonmembers)))
        return mia_efficacy(
            svc_attack,
            (members, no_labels[0]),
            (nonmembers, no_labels[1]),
            (targets, torch.zeros(len(targets))),
        )

    assert efficacy(_scores(0.60, 0.10, 200, 2)) > 0.9
    assert efficacy(_scores(0.95, 0.03, 200, 3)) < 0.1
    # Seeded: the same inputs give the same share.
    assert efficacy(_scores(0.8, 0.2, 50, 4)) == efficacy(_scores(0.8, 0.2, 50, 4))


def test_gaps_to_retrain_are_absolute_differences_and_their_mean() -> None:
    retrain = {"forget_acc": 0.9, "retain_acc": 1.0, "test_acc": 0.95, "mia_lira": 0.1}
    model = {"forget_acc": 0.0, "retain_acc": 0.9, "test_acc": 0.95, "mia_lira": 0.5}

    gaps = gaps_to_retrain(model, retrain)

    expected = {"forget_acc": 0.9, "retain_acc": 0.1, "test_acc": 0.0, "mia_lira": 0.4}
    for name in GAP_METRICS:
        assert gaps[name] == pytest.approx(expected[name])
    assert gaps["avg_gap"] == pytest.approx(0.35)
    assert gaps_to_retrain(retrain, retrain)["avg_gap"] == 0.0


def test_split_metrics_score_the_target_classes_on_the_test_split() -> None:
    labels = torch.tensor([0, 1, 1, 2])
    outputs = {
        "forget": (_logits_predicting([0, 1], 3), torch.tensor([1, 1])),
        "retain": (_logits_predicting([0, 1, 2, 2], 3), labels),
        "test": (_logits_predicting([0, 1, 0, 2], 3), labels),
        "calibration": (_logits_predicting([0, 0, 1, 2], 3), labels),
    }

    metrics = split_metrics(outputs, num_classes=3, target_classes=[1])

    assert metrics["forget_acc"] == 0.5
    assert metrics["retain_acc"] == 0.75
    assert metrics["test_acc"] == 0.75
    assert metrics["target_class_test_acc"] == 0.5
    assert metrics["class_test_acc"] == [1.0, 0.5, 1.0]
    assert metrics["class_forget_acc"] == [None, 0.5, None]  # no forget sample of 0 or 2
    assert 0.0 <= metrics["mia_lira"] <= 1.0


def digits_summary(models: dict[str, Any]) -> dict[str, Any]:
    """An evaluation summary of a digits sub-class request with these model rows."""
    request = {"kind": "classes"}
    return {
        "dataset": "digits",
        "request": request,
        "num_forget": 15,
        "num_retain": 1422,
        "models": models,
    }


def test_markdown_table_has_a_row_per_model() -> None:
    row = {"forget_acc": 1.0, "retain_acc": 1.0, "test_acc": 0.9, "target_class_test_acc": 0.8}
    summary = digits_summary(
        {
            "original": {"metrics": {**row, "mia_lira": 0.0}, "timing": {"fit_seconds": 3}},
            "ps": {
                "metrics": {**row, "mia_lira": float("nan")},
                "gap_to_retrain": {"avg_gap": 0.125},
            },
        }
    )
    table = markdown_table(summary)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 3  # header + two models
    assert lines[1].startswith("| original |") and lines[1].endswith("| – | 3.00 |")
    assert "| 0.125 |" in lines[2] and "| – |" in lines[2]


def test_markdown_table_notes_a_ps_run_that_kept_its_start() -> None:
    row = {"forget_acc": 1.0, "retain_acc": 1.0, "test_acc": 0.9}
    kept = {"ps_kept_start_state": True, "early_stop_outcome": "kept the starting head"}
    summary = digits_summary(
        {
            "ps": {"metrics": row, "unlearning": {**kept, "ps_kept_start_state": False}},
            "naive_then_ps": {"metrics": row, "unlearning": kept},
        }
    )

    notes = markdown_table(summary).split("\n\n")[-1].strip().splitlines()

    assert notes == ["naive_then_ps: PS's early stop kept the starting head."]


def test_hparam_rows_give_a_column_one_type() -> None:
    def unlearned(rcond: float | str) -> dict[str, Any]:
        config = {
            "method": "naive+ps",
            "lr": 0.01,
            "rcond": rcond,
            "use_index": True,
            "grid": [1, 2],
            "_class_path": "x",
        }
        return {
            "metrics": {"forget_acc": 0.5, "relearn_steps": 3},
            "unlearning": {"method": "PSUnlearnModule", "config": config, "stopped_at_epoch": None},
        }

    summary = {
        "retrain": None,
        "models": {
            "a": unlearned("auto"),
            "b": unlearned(1e-5),
            "c": {**unlearned(0.0), "unlearning": None},
        },
    }

    rows = hparam_rows(summary, original="c")

    params, metrics = rows["b"]
    assert params == {
        "method": "Naive PS + PS",
        "role": "unlearned",
        "model": "b",
        "lr": 0.01,
        "rcond": "1e-05",  # text in every row, as "auto" is text in one
        "use_index": True,
        "grid": "[1, 2]",
    }
    assert rows["a"][0]["rcond"] == "auto"
    assert metrics == {"hparams/forget_acc": 0.5, "hparams/relearn_steps": 3.0}
    assert rows["c"][0] == {"method": "training", "role": "original", "model": "c"}
    assert [list(params)[:3] for params, _ in rows.values()] == [["method", "role", "model"]] * 3


def _ps_row(method: str, method_run: str | None = None, **options: Any) -> dict[str, Any]:
    """A PS model's summary entry: every option at its default, a record of both stages
    (``method_run``: what ``auto`` resolved to)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(PSUnlearnModule.__init__).parameters.items()
        if name not in ("self", "original_ckpt")
    }
    record = dict.fromkeys((*SURGERY_RECORD, *EPOCH_RECORD), 1) | {"method_run": method_run}
    config = {**defaults, "method": method, **options}
    return {
        "metrics": {},
        "unlearning": {"method": "PSUnlearnModule", "config": config, **record},
    }


def test_hparam_rows_show_only_the_options_each_ps_method_applied() -> None:
    summary = {
        "retrain": None,
        "models": {
            "naive_ps": _ps_row("naive"),
            "ps": _ps_row("ps"),
            "anchored": _ps_row("naive+ps", retain_anchor=1.0),
            "block": _ps_row(
                "auto",
                method_run="block",
                block_batch_size=1024,
                block_min_steps=500,
                block_stop_rows=10_000,
            ),
        },
    }

    rows = {name: params for name, (params, _) in hparam_rows(summary, None).items()}

    assert rows["naive_ps"]["method"] == "Naive PS" and rows["ps"]["method"] == "PS"
    epoch_only = {*EPOCH_OPTIONS, *ANCHOR_OPTIONS, *(f"record/{k}" for k in EPOCH_RECORD)}
    surgery_only = {*SURGERY_OPTIONS, *(f"record/{k}" for k in SURGERY_RECORD)}
    assert not epoch_only & set(rows["naive_ps"]) and surgery_only <= set(rows["naive_ps"])
    assert not surgery_only & set(rows["ps"]) and set(EPOCH_OPTIONS) <= set(rows["ps"])
    assert not set(ANCHOR_OPTIONS) & set(rows["ps"])  # no anchor: its settings did nothing
    assert epoch_only | surgery_only <= set(rows["anchored"])
    assert not set(DATA_OPTIONS) & {key for params in rows.values() for key in params}
    # auto that ran the last block: named as it ran, with the block's options, not PS's epochs
    assert rows["block"]["method"] == "PS module, last block retrained"
    assert set(BLOCK_OPTIONS) <= set(rows["block"]) and not set(BLOCK_OPTIONS) & set(rows["ps"])
    assert not (surgery_only | {"epochs", "lr", "top_k", "early_stop"}) & set(rows["block"])


def test_the_hparam_stages_place_every_option_of_ps() -> None:
    options = set(inspect.signature(PSUnlearnModule.__init__).parameters) - {
        "self",
        "original_ckpt",
        "method",
    }
    groups = (SURGERY_OPTIONS, EPOCH_OPTIONS, ANCHOR_OPTIONS, BLOCK_OPTIONS, DATA_OPTIONS)
    placed = [key for group in groups for key in group]

    assert sorted(placed) == sorted(options), "place a new PS option in its stage's group"
    assert BLOCK_OPTIONS == options_module.BLOCK_OPTIONS  # the harness keys steps by that one


# --------------------------------------------------------------------------- ps-lightning test


def _evaluate(save_dir: Path, original: Original, checkpoints: dict[str, Path], *args: str) -> Path:
    named = json.dumps({name: str(path) for name, path in checkpoints.items()})
    return run_cli(
        "test",
        "evaluate.yaml",
        save_dir,
        "evaluate",
        "--model.init_args.checkpoints",
        named,
        "--data.init_args.split_manifest",
        str(original.manifest),
        *args,
    )


@pytest.fixture(scope="module")
def evaluation(
    original: Original,
    retrain_ckpt: Path,
    naive_reference: Path,
    ps_reference: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    checkpoints = {
        "original": original.ckpt,
        "retrain": retrain_ckpt,
        "naive_ps": naive_reference,
        "ps": ps_reference,
    }
    return _evaluate(tmp_path_factory.mktemp("evaluation"), original, checkpoints)


def test_evaluate_writes_metrics_of_every_model_with_gaps_to_retrain(evaluation: Path) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())

    assert set(summary["models"]) == {"original", "retrain", "naive_ps", "ps"}
    assert summary["retrain"] == "retrain"
    assert summary["num_forget"] == 15 and summary["target_classes"] == [1]
    for result in summary["models"].values():
        metrics = result["metrics"]
        for name in (*GAP_METRICS, "target_class_test_acc", "mia_svc"):
            assert 0.0 <= metrics[name] <= 1.0
        assert len(metrics["class_test_acc"]) == 10
        assert set(result["gap_to_retrain"]) == {*GAP_METRICS, "avg_gap", "avg_gap_without_mia"}
    assert all(v == 0.0 for v in summary["models"]["retrain"]["gap_to_retrain"].values())
    assert summary["models"]["ps"]["unlearning"]["config"]["method"] == "auto"  # ps.yaml's
    assert summary["models"]["naive_ps"]["timing"]["fit_seconds"] > 0
    table = (evaluation / "table.md").read_text()
    for name in summary["models"]:
        assert f"| {name} |" in table


def test_evaluate_numbers_match_the_models_outputs(original: Original, evaluation: Path) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())
    model, _ = load_classifier(str(original.ckpt))
    data = DigitsDataModule(split_manifest=str(original.manifest))
    with torch.no_grad():
        for split in ("forget", "retain", "test"):
            images, labels = data.samples(split).tensors
            logits = model(data.model_input(images))
            expected = accuracy(logits, labels)
            assert summary["models"]["original"]["metrics"][f"{split}_acc"] == pytest.approx(
                expected, abs=1e-9
            ), split


def _scalar(events: EventAccumulator, tag: str) -> float:
    (event,) = events.Scalars(tag)
    assert event.step == 0, tag
    return event.value


def _table_rows(table: str) -> dict[str, dict[str, str]]:
    """The cells of table.md by model and column header."""
    lines = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    header, *rows = lines
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_tensorboard_scalars_hold_the_tables_values(evaluation: Path) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())
    table = _table_rows((evaluation / "table.md").read_text())
    events = tensorboard_events(evaluation)

    for name, result in summary["models"].items():
        for header, key, digits in COLUMNS:
            value = _scalar(events, f"eval/{name}/metric/{key}")
            assert value == pytest.approx(result["metrics"][key], abs=1e-6), (name, key)
            assert table[name][header] == f"{value:.{digits}f}", (name, key)
        for key, gap in result["gap_to_retrain"].items():
            value = _scalar(events, f"eval/{name}/gap_to_retrain/{key}")
            assert value == pytest.approx(gap, abs=1e-6), (name, key)
        avg_gap = _scalar(events, f"eval/{name}/gap_to_retrain/avg_gap")
        assert table[name]["avg gap to retrain"] == f"{avg_gap:.3f}"
        seconds = _scalar(events, f"eval/{name}/fit_seconds")
        assert table[name]["fit time (s)"] == f"{seconds:.2f}"


def test_tensorboard_shows_per_class_accuracy_as_figures_not_scalars(evaluation: Path) -> None:
    events = tensorboard_events(evaluation)

    # A scalar chart of classes would put the class index on its step axis and smooth across
    # classes: every scalar is one value at step 0, and none is per class.
    scalars = events.Tags()["scalars"]
    assert all([e.step for e in events.Scalars(tag)] == [0] for tag in scalars)
    assert not [tag for tag in scalars if "class_acc" in tag]
    for name in ("original", "retrain", "naive_ps", "ps"):
        (image,) = events.Images(f"per_class_accuracy/{name}")
        assert image.width >= 600 and image.height >= 600, name


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header.startswith(b"\x89PNG"), path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_evaluate_writes_the_comparison_chart_beside_the_data_it_draws(evaluation: Path) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())
    comparison = json.loads((evaluation / "comparison.json").read_text())

    unlearned = ("original", "naive_ps", "ps")
    for key in ("avg_gap_without_mia", "avg_gap"):
        assert comparison[key] == pytest.approx(
            {name: summary["models"][name]["gap_to_retrain"][key] for name in unlearned}
        ), key
    assert summary["attack_scored_samples"]["nonmembers"] > 0
    level = comparison["mia_chance_level"]
    reads = {
        name: result["metrics"]["mia_lira_attack_acc"] > level
        for name, result in summary["models"].items()
    }
    assert comparison["mia_informative"] == {n: reads[n] and reads["retrain"] for n in unlearned}
    ranked_by = comparison[comparison["read"]]
    assert [ranked_by[name] for name in comparison["ranking"]] == sorted(ranked_by.values())
    width, height = _png_size(evaluation / "comparison.png")
    (image,) = tensorboard_events(evaluation).Images("comparison/vs_retrain")
    assert (image.width, image.height) == (width, height)
    assert width >= 1000 and height >= 0.6 * width  # was 1590 x 460


def test_tensorboard_shows_the_figures_and_the_table_as_text(evaluation: Path) -> None:
    events = tensorboard_events(evaluation)
    models = ("original", "retrain", "naive_ps", "ps")

    images = events.Tags()["images"]
    expected = {
        "comparison/vs_retrain",
        *(f"confusion_matrix/{name}" for name in models),
        *(f"per_class_accuracy/{name}" for name in models),
    }
    assert expected <= set(images)
    for tag in expected:
        (image,) = events.Images(tag)
        assert image.encoded_image_string.startswith(b"\x89PNG") and image.width > 200, tag
    assert logged_text(events, "table") == (evaluation / "table.md").read_text()


def _start_info(folder: Path) -> Any:
    content = tensorboard_events(folder).PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    return hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )


def _session_start(folder: Path) -> dict[str, Any]:
    start = _start_info(folder)
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}


def test_hparams_rows_are_typed_with_original_and_retrain_for_reference(evaluation: Path) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())

    for name, result in summary["models"].items():
        params = _session_start(evaluation / "hparams" / name)
        assert params["model"] == name
        events = tensorboard_events(evaluation / "hparams" / name)
        for key in ("forget_acc", "test_acc", "mia_lira", "relearn_steps"):
            assert _scalar(events, f"hparams/{key}") == pytest.approx(result["metrics"][key]), key
        assert _scalar(events, "hparams/avg_gap") == pytest.approx(
            result["gap_to_retrain"]["avg_gap"]
        )
    assert _session_start(evaluation / "hparams" / "original")["role"] == "original"
    assert _session_start(evaluation / "hparams" / "retrain")["role"] == "retrain"
    ps = _session_start(evaluation / "hparams" / "ps")
    config = summary["models"]["ps"]["unlearning"]["config"]
    assert ps["role"] == "unlearned" and ps["method"] == "PS"
    assert ps["lr"] == config["lr"] and ps["epochs"] == 10  # numbers, not their text
    assert ps["record/ps_kept_start_state"] == 0.0  # a flag as a number
    assert not [key for key in ps if key.startswith("_")]  # jsonargparse's _class_path
    # One experiment holds every row's columns (TensorBoard reads its columns from one).
    content = tensorboard_events(evaluation / "hparams").PluginTagToContent(
        hparams_metadata.PLUGIN_NAME
    )
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG]
    )
    columns = {info.name: info.type for info in experiment.hparam_infos}
    assert (
        columns["lr"] == api_pb2.DATA_TYPE_FLOAT64 and columns["model"] == api_pb2.DATA_TYPE_STRING
    )
    assert set(ps) <= set(columns)
    # The columns in the order TensorBoard shows them: method and role first.
    _sort_and_reduce_to_hparams_limit(experiment)
    assert [info.name for info in experiment.hparam_infos][:2] == ["method", "role"]


def test_hparams_rows_tell_naive_ps_from_ps_by_method_options_and_trial_name(
    evaluation: Path,
) -> None:
    summary = json.loads((evaluation / "metrics.json").read_text())
    naive = _session_start(evaluation / "hparams" / "naive_ps")
    ps = _session_start(evaluation / "hparams" / "ps")

    assert naive["method"] == "Naive PS" and ps["method"] == "PS"
    assert {"epochs", "lr", "early_stop", "record/early_stop_used"}.isdisjoint(naive)
    assert {"epochs", "lr", "early_stop"} <= set(ps) and "rcond" not in ps
    assert "rcond" in naive
    # The trial names start with what tells the rows apart (TensorBoard cuts long names).
    names = {
        name: _start_info(evaluation / "hparams" / name).group_name for name in ("naive_ps", "ps")
    }
    assert names["naive_ps"].startswith("naive_ps · Naive PS · ")
    assert names["ps"].startswith("ps · PS · ")
    # The stages' record keys are a PS record's (this room cannot import PS to ask it).
    for name in ("naive_ps", "ps"):
        assert set(SURGERY_RECORD) | set(EPOCH_RECORD) <= set(summary["models"][name]["unlearning"])


def _retrain_of_another_split(retrain_ckpt: Path, folder: Path) -> Path:
    checkpoint = load_checkpoint(retrain_ckpt)
    manifest = checkpoint["ps_lightning"]["data"]["split_manifest"]
    manifest["forget_indices"] = manifest["forget_indices"][:-1]
    path = folder / "other-retrain.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("which", ["the original", "a retrain of another request"])
def test_evaluate_refuses_a_retrain_not_trained_on_this_retain_set(
    original: Original, retrain_ckpt: Path, tmp_path: Path, which: str
) -> None:
    bad = (
        original.ckpt
        if which == "the original"
        else _retrain_of_another_split(retrain_ckpt, tmp_path)
    )
    save_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="not a model retrained without this forget set"):
        _evaluate(save_dir, original, {"original": original.ckpt, "retrain": bad})
    assert nothing_written(save_dir)


def test_evaluate_refuses_an_unlearned_model_made_for_another_request(
    original: Original, retrain_ckpt: Path, naive_reference: Path, tmp_path: Path
) -> None:
    # The same kind of file, one forget id fewer: the result of another request.
    other = _retrain_of_another_split(naive_reference, tmp_path)
    save_dir = tmp_path / "runs"
    checkpoints = {"original": original.ckpt, "retrain": retrain_ckpt, "naive_ps": other}
    with pytest.raises(ValueError, match=r"other-retrain\.ckpt' is the result of another request"):
        _evaluate(save_dir, original, checkpoints)
    assert nothing_written(save_dir)


def test_evaluate_refuses_a_checkpoint_of_another_training_set(
    original: Original, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(original.ckpt)
    checkpoint["ps_lightning"]["data"]["split_manifest"]["fingerprint"] = "0123456789abcdef"
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    save_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="fingerprint"):
        _evaluate(save_dir, original, {"foreign": foreign}, "--model.init_args.retrain", "null")
    assert nothing_written(save_dir)
