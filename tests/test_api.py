"""The Python API (`ps_lightning.api`): the README's example, agreement with the CLI, the kept
features and index, the metrics, and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from unlearning_fixtures import Original, fc_weight, naive_reference, original

from ps_lightning import ForgetResult, Unlearner
from ps_lightning.data import DigitsDataModule
from ps_lightning.metrics import split_metrics
from ps_lightning.models import LeNet5
from ps_lightning.prototype_surgery.ledger import record_path
from ps_lightning.splits import EVAL_SPLITS
from ps_lightning.unlearning.unlearning_module import UnlearningModule

__all__ = ["naive_reference", "original"]  # fixtures used below


def readme_python_api_example() -> str:
    """The first Python code block of the README's "Python API" section."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Python API section has no python code block"
    return match.group(1)


@pytest.fixture
def unlearner(original: Original, tmp_path: Path) -> Unlearner:
    """An unlearner on a private copy of the session's original model (its own index)."""
    return Unlearner.from_checkpoint(original.copy_to(tmp_path / "original"), DigitsDataModule())


def test_the_readme_example_runs_on_a_digits_model(
    original: Original, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = readme_python_api_example()
    paths = re.findall(r"\"([^\"]+\.ckpt)\"", code)
    assert len(paths) == 1, f"the example names one checkpoint, found {paths}"
    checkpoint = tmp_path / paths[0]
    checkpoint.parent.mkdir(parents=True)
    shutil.copyfile(original.ckpt, checkpoint)
    monkeypatch.chdir(tmp_path)
    names: dict[str, object] = {}
    exec(compile(code, "README.md (Python API)", "exec"), names)
    result, whole_class = names["result"], names["whole_class"]
    assert isinstance(result, ForgetResult) and isinstance(whole_class, ForgetResult)
    assert result.forget_indices == [3, 17, 42]
    assert result.record["config"]["method"] == "naive"
    labels = DigitsDataModule().samples("train").tensors[1]
    assert whole_class.forget_indices == torch.nonzero(labels == 1).flatten().tolist()
    assert isinstance(names["model"], LeNet5)
    # Nothing but the surgery index beside the checkpoint is written.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(p == paths[0] or p.startswith(paths[0] + ".surgery-") for p in written), written


def test_naive_ps_gives_the_prototypes_of_the_cli_run(
    unlearner: Unlearner, original: Original, naive_reference: Path
) -> None:
    manifest = json.loads(original.manifest.read_text())
    result = unlearner.forget(classes=[1], ratio=0.1, method="naive")
    assert result.forget_indices == manifest["forget_indices"]
    torch.testing.assert_close(
        result.model.prototypes.weight.detach(), fc_weight(naive_reference), rtol=1e-5, atol=1e-6
    )


def test_a_second_request_passes_no_image_through_the_backbone_and_reuses_the_index(
    unlearner: Unlearner, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = unlearner.forget([0, 1, 2], method="naive")
    assert first.record["index_built"] is True
    unlearner.forget([0, 1, 2], method="ps", epochs=1, early_stop="on")  # calibration half
    passes: list[int] = []
    feature_pass = UnlearningModule.iter_features

    def counted(self, loader):  # type: ignore[no-untyped-def]
        passes.append(len(loader.dataset))
        yield from feature_pass(self, loader)

    monkeypatch.setattr(UnlearningModule, "iter_features", counted)
    second = unlearner.forget([5, 6, 7, 8], method="naive")
    ps = unlearner.forget([5, 6, 7, 8], method="ps", epochs=3, early_stop="on")
    assert second.record["index_built"] is False
    assert passes == []
    assert ps.forget_indices == [5, 6, 7, 8]


def test_metrics_are_the_evaluations_of_the_new_model_on_the_images(
    unlearner: Unlearner,
) -> None:
    result = unlearner.forget([3, 17, 42, 99], method="ps", epochs=5)
    data = DigitsDataModule().with_forget_set([3, 17, 42, 99], {"kind": "test"})
    outputs = {}
    with torch.no_grad():
        for split in EVAL_SPLITS:
            images, labels = data.samples(split).tensors
            outputs[split] = (result.model(data.model_input(images)), labels)
    forget_labels = outputs["forget"][1].tolist()
    expected = split_metrics(outputs, data.num_classes, sorted(set(forget_labels)))
    assert result.metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-6), name


def test_save_to_writes_a_run_folder_that_loads_with_lightning(
    unlearner: Unlearner, tmp_path: Path
) -> None:
    result = unlearner.forget([3, 17, 42], method="naive", save_to=tmp_path / "request")
    assert result.checkpoint == tmp_path / "request" / "checkpoints" / "model.ckpt"
    manifest = json.loads((tmp_path / "request" / "split.json").read_text())
    assert manifest["forget_indices"] == [3, 17, 42]
    loaded = LeNet5.load_from_checkpoint(result.checkpoint)
    torch.testing.assert_close(loaded.state_dict(), result.model.state_dict())
    saved = result.checkpoint.read_bytes()
    with pytest.raises(FileExistsError):
        unlearner.forget([4], method="naive", save_to=tmp_path / "request")
    assert result.checkpoint.read_bytes() == saved


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"ids": [3], "ratio": 0.1}, "not both"),
        ({}, "name the samples to forget"),
        ({"ids": [3, 100_000]}, "out of range"),
        ({"ids": [3, 3]}, "more than once"),
        ({"ids": []}, "non-empty forget set"),
        ({"classes": [12], "ratio": 0.1}, "unknown classes"),
        ({"ratio": 1.5}, "outside"),
        # Ids are integers: nothing is rounded, split into digits or read as a number.
        ({"ids": "42"}, r"expected a list of integer sample ids .* got str '42'"),
        ({"ids": [3.9, 17.2]}, r"entry 0 is 3\.9 \(float\), not an integer"),
        ({"ids": torch.tensor([3.0, 17.0])}, r"entry 0 is 3\.0 \(float\)"),
        ({"ids": ["3", "17"]}, r"entry 0 is '3' \(str\)"),
        ({"ids": [5, True]}, r"entry 1 is True \(bool\)"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(
    unlearner: Unlearner, request_args: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        unlearner.forget(**request_args, method="naive")


def test_the_ledger_names_a_result_file_only_where_one_was_saved(
    unlearner: Unlearner, tmp_path: Path
) -> None:
    unlearner.forget([3, 17], method="naive", cumulative=True)
    saved = unlearner.forget([42], method="naive", cumulative=True, save_to=tmp_path / "kept")

    requests = json.loads(record_path(unlearner.checkpoint).read_text())["requests"]
    assert [r["result_checkpoint"] for r in requests] == [None, str(saved.checkpoint.resolve())]


def test_integer_arrays_tensors_ranges_sets_and_generators_are_ids(unlearner: Unlearner) -> None:
    for ids in (
        torch.tensor([42, 3, 17]),
        np.array([42, 3, 17]),
        (3, np.int64(17), 42),
        {42, 17, 3},
        (i for i in (17, 3, 42)),
    ):
        request = unlearner._request_data(ids, None, None, None)
        assert request.forget_indices.tolist() == [3, 17, 42]
    assert unlearner._request_data(range(40, 43), None, None, None).forget_indices.tolist() == [
        40, 41, 42,
    ]  # fmt: skip


@pytest.mark.parametrize("holds", ["checkpoints/model.ckpt", "metrics.json", "config.yaml"])
def test_save_to_a_folder_that_holds_a_run_is_refused_and_left_as_it_is(
    unlearner: Unlearner, tmp_path: Path, holds: str
) -> None:
    taken = tmp_path / "taken" / holds
    taken.parent.mkdir(parents=True)
    taken.write_text("a run's file")

    with pytest.raises(FileExistsError, match=f"'{tmp_path / 'taken'}' holds .*{holds}"):
        unlearner.forget([3], method="naive", save_to=tmp_path / "taken")

    assert [p for p in (tmp_path / "taken").rglob("*") if p.is_file()] == [taken]
    assert taken.read_text() == "a run's file"


def test_a_checkpoint_of_other_data_is_refused(original: Original) -> None:
    class OtherDigits(DigitsDataModule):
        mean = (0.5,)  # another input normalisation: another training-set fingerprint

    with pytest.raises(ValueError, match="not on this data"):
        Unlearner.from_checkpoint(original.ckpt, OtherDigits())


def test_the_api_runs_the_datasets_shipped_settings_unless_the_paper_preset_is_asked(
    unlearner: Unlearner,
) -> None:
    shipped = unlearner.forget(classes=[1], ratio=1.0)
    paper = unlearner.forget(classes=[1], ratio=1.0, preset="paper")
    assert shipped.settings == "the shipped settings of digits/ps.yaml"
    assert shipped.record["config"]["lr"] == 0.03
    assert shipped.record["config"]["trainable"] == "weight+bias"
    assert paper.record["config"]["lr"] == 0.01 and paper.record["config"]["trainable"] == "bias"
    # The shipped whole-class setting (`auto`: the last block retrained) forgets the class; the
    # paper's (PS on the head) leaves part of it.
    assert shipped.record["method_run"] == "block" and paper.record["method_run"] == "ps"
    assert shipped.metrics["forget_acc"] == 0.0 < paper.metrics["forget_acc"]
    assert shipped.changed_predictions > 0


def test_a_request_that_changes_no_prediction_says_so(unlearner: Unlearner) -> None:
    with pytest.warns(UserWarning, match="no forget sample is classified otherwise.*kept the"):
        kept = unlearner.forget(classes=[1], ratio=0.1)  # PS's early stop keeps the head
    assert kept.changed_predictions == 0 and kept.record["ps_kept_start_state"]


@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist", "cifar10", "image_folder"])
def test_the_shipped_preset_is_what_the_cli_runs_from_the_datasets_ps_config(dataset: str) -> None:
    from ps_lightning.presets import ps_options
    from ps_lightning.steps import resolved_config

    options, settings = ps_options(dataset, "shipped")
    config = resolved_config(["fit", "--config", str(REPO_ROOT / "configs" / dataset / "ps.yaml")])
    init_args = config["fit"]["model"]["init_args"]
    assert options and settings.endswith(f"{dataset}/ps.yaml")
    assert options == {k: init_args[k] for k in options}
    assert ps_options(dataset, "paper") == ({}, "PSUnlearnModule's defaults (the paper's PS)")
    unknown = ps_options("shapes", "shipped")
    assert unknown[0] == {} and "no shipped settings for 'shapes'" in unknown[1]
    # A user's image folder under its own name takes the image-folder settings.
    named = ps_options("shapes", "shipped", fallback="image_folder")
    assert named == ps_options("image_folder", "shipped")
    with pytest.raises(FileNotFoundError, match="install from a clone"):
        ps_options("digits", "shipped", configs=REPO_ROOT / "no-configs")
