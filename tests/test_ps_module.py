"""PSUnlearnModule end to end on digits, through the real `ps-lightning fit` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from unlearning_fixtures import (
    DEFAULT_NUM_FORGET,
    Original,
    fc_weight,
    load_checkpoint,
    logged_text,
    naive_reference,
    nothing_written,
    original,
    result_checkpoint,
    retrain_ckpt,
    tensorboard_events,
    unlearn,
    unlearning_record,
    write_indices,
)

from ps_lightning import Unlearner
from ps_lightning.cli import main as cli_main
from ps_lightning.data import DigitsDataModule
from ps_lightning.data.manifest import write_manifest
from ps_lightning.models import LeNet5
from ps_lightning.models.classifier import classifier_record, load_classifier
from ps_lightning.prototype_surgery import PSUnlearnModule
from ps_lightning.prototype_surgery import threads as ps_threads
from ps_lightning.prototype_surgery.closed_form import (
    augmented_gram,
    gram,
    naive_head_surgery,
    naive_prototype_surgery,
    noise_floor_rtol,
)
from ps_lightning.prototype_surgery.early_stop import ClosestToHeldoutLevel, early_stop_outcome
from ps_lightning.prototype_surgery.figures import early_stop_note, prototype_shift_figure
from ps_lightning.prototype_surgery.ledger import (
    Ledger,
    classifier_content_hash,
    file_sha256,
    index_path,
    record_path,
)
from ps_lightning.prototype_surgery.threads import HEAD_THREADS, NVML_CHECK, HeadThreads

__all__ = ["naive_reference", "original", "retrain_ckpt"]  # fixtures used below

HEAD = ("net.fc.weight", "net.fc.bias")
# A short PS run that does train (early stopping off: it may stop at once on a weak model).
FEW_EPOCHS = (
    "--model.init_args.epochs",
    "5",
    "--model.init_args.lr",
    "0.05",
    "--model.init_args.early_stop",
    "off",
)


def _assert_only_head_changed(result: Path, original_ckpt: Path) -> dict[str, torch.Tensor]:
    before = load_checkpoint(original_ckpt)["state_dict"]
    after = load_checkpoint(result)["state_dict"]
    assert after.keys() == before.keys()
    buffers = [k for k in before if "running_" in k or "num_batches_tracked" in k]
    assert buffers, "LeNet5 has BatchNorm buffers; the check below must cover them"
    for key in before:
        if key not in HEAD:
            assert torch.equal(after[key], before[key]), f"{key} changed"
    return {key: after[key] for key in HEAD} | {f"original.{key}": before[key] for key in HEAD}


# --------------------------------------------------------------------------- what changes


@pytest.mark.parametrize(
    ("method", "trainable"), [("ps", "weight+bias"), ("naive+ps", "bias")], ids=["ps", "naive+ps"]
)
def test_unlearning_changes_only_the_final_layer(
    original: Original, tmp_path: Path, method: str, trainable: str
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    result = unlearn(
        tmp_path / "runs",
        method,
        ckpt,
        "--model.init_args.method",
        method,
        "--model.init_args.trainable",
        trainable,
        *FEW_EPOCHS,
        manifest=original.manifest,
        config="ps.yaml",
    )

    head = _assert_only_head_changed(result, ckpt)
    # Not vacuous: the final layer did move.
    assert not torch.equal(head["net.fc.weight"], head["original.net.fc.weight"])
    assert not torch.equal(head["net.fc.bias"], head["original.net.fc.bias"])


def test_bias_only_ps_leaves_the_prototype_weights_untouched(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    result = unlearn(
        tmp_path / "runs",
        "ps",
        ckpt,
        "--model.init_args.trainable",
        "bias",
        *FEW_EPOCHS,
        manifest=original.manifest,
        config="ps.yaml",
    )

    head = _assert_only_head_changed(result, ckpt)
    assert torch.equal(head["net.fc.weight"], head["original.net.fc.weight"])
    assert not torch.equal(head["net.fc.bias"], head["original.net.fc.bias"])


def test_unlearning_never_modifies_the_original_checkpoint(
    original: Original, tmp_path: Path
) -> None:
    # The session's own original file, not a copy: every other test relies on it too.
    for method in ("naive", "naive+ps"):
        unlearn(
            tmp_path / "runs",
            method.replace("+", "_"),
            original.ckpt,
            "--model.init_args.method",
            method,
            *FEW_EPOCHS,
            manifest=original.manifest,
            config="ps.yaml",
        )
    assert file_sha256(original.ckpt) == original.sha256


def test_result_checkpoint_loads_safely_as_a_classifier(
    original: Original, naive_reference: Path
) -> None:
    raw = torch.load(naive_reference, map_location="cpu", weights_only=True)
    model, record = load_classifier(str(naive_reference))

    assert isinstance(model, LeNet5)
    assert torch.equal(model.net.fc.weight, raw["state_dict"]["net.fc.weight"])
    # The same format as the original: the architecture's own arguments, not the method's.
    original_record = load_checkpoint(original.ckpt)["ps_lightning"]
    assert record["architecture"] == original_record["architecture"] == "LeNet5"
    assert record["init_args"] == original_record["init_args"]
    # Lightning's own loader reads the class path and instantiator beside them.
    assert raw["hyper_parameters"] == {
        **original_record["init_args"],
        "_class_path": "ps_lightning.models.zoo.LeNet5",
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    }
    assert record["data"]["train_on"] == "unlearned"
    assert (
        record["data"]["split_manifest"]["forget_indices"]
        == (
            load_checkpoint(original.ckpt)["ps_lightning"]["data"]["split_manifest"][
                "forget_indices"
            ]
        )
    )
    unlearning = record["unlearning"]
    assert unlearning["method"] == "PSUnlearnModule"
    assert unlearning["config"]["method"] == "naive"
    assert unlearning["removed_samples"] == DEFAULT_NUM_FORGET
    # The classifier runs: logits for a digits-shaped batch.
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def _features_by_hand(original: Original) -> tuple[LeNet5, torch.Tensor, torch.Tensor]:
    model, _ = load_classifier(str(original.ckpt))
    data = DigitsDataModule(split_manifest=str(original.manifest))
    images, _ = data.samples("train").tensors
    with torch.no_grad():
        features = model.forward_features(data.model_input(images))
    return model, features, data.forget_indices


def test_naive_result_equals_surgery_on_features_extracted_by_hand(
    original: Original, naive_reference: Path
) -> None:
    model, features32, forget = _features_by_hand(original)
    features = features32.double()
    weight, initial = model.net.fc.weight.double(), model.initial_prototypes.double()
    assert not torch.equal(weight, initial)
    rtol = noise_floor_rtol(features.shape[1], features32.dtype)  # the default, rcond auto

    by_hand, rank = naive_prototype_surgery(
        weight, initial, gram(features), gram(features[forget]), rtol
    )
    # The paper's own N-column formula: W0 + ((W − W0)·pinv(F))[:, r]·F_r, with the same
    # cutoff on F's singular values (G's eigenvalues are their squares).
    retain = torch.ones(len(features), dtype=torch.bool)
    retain[forget] = False
    theta = (weight - initial) @ torch.linalg.pinv(features, rtol=rtol**0.5)
    paper = initial + theta[:, retain] @ features[retain]

    result = load_checkpoint(naive_reference)["state_dict"]
    torch.testing.assert_close(result["net.fc.weight"].double(), by_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result["net.fc.weight"].double(), paper, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(result["net.fc.weight"].double(), weight, atol=1e-3)
    assert torch.equal(result["net.fc.bias"], model.net.fc.bias)  # the bias is left as it is
    record = unlearning_record(naive_reference)
    assert record["surgery_rtol"] == rtol
    assert record["surgery_rank"] == rank


def test_bias_aware_naive_result_equals_surgery_on_features_extracted_by_hand(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    result = unlearn(
        tmp_path / "runs",
        "naive_bias",
        ckpt,
        "--model.init_args.surgery_bias",
        "true",
        manifest=original.manifest,
    )
    model, features, forget = _features_by_hand(original)
    head = model.net.fc

    weight, bias, _ = naive_head_surgery(
        (head.weight.double(), head.bias.double()),
        (model.initial_prototypes.double(), model.initial_bias.double()),
        augmented_gram(features),
        augmented_gram(features[forget]),
        noise_floor_rtol(features.shape[1] + 1, features.dtype),
        with_bias=True,
    )

    state = load_checkpoint(result)["state_dict"]
    torch.testing.assert_close(state["net.fc.weight"].double(), weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state["net.fc.bias"].double(), bias, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(state["net.fc.bias"], head.bias, atol=1e-4)


# --------------------------------------------------------------------------- the surgery index


def test_surgery_index_is_written_beside_the_original_and_reused(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    first = unlearn(tmp_path / "runs", "first", ckpt, manifest=original.manifest)
    index_file = index_path(ckpt)
    assert index_file.parent == ckpt.parent and index_file.is_file()
    assert Ledger(ckpt, model_hash(ckpt)).read().tensors is not None
    assert unlearning_record(first)["index_built"] is True
    stamp = index_file.stat().st_mtime_ns

    second = unlearn(tmp_path / "runs", "second", ckpt, manifest=original.manifest)

    assert unlearning_record(second)["index_built"] is False
    assert torch.equal(fc_weight(second), fc_weight(first))
    assert index_file.stat().st_mtime_ns == stamp  # a non-cumulative request leaves it as it is


def model_hash(ckpt: Path) -> str:
    model, record = load_classifier(str(ckpt))
    return classifier_content_hash(model, record["data"]["split_manifest"]["fingerprint"])


def _garbage(index_file: Path, valid: dict) -> None:
    index_file.write_bytes(b"not a torch file at all")


def _foreign_checkpoint(index_file: Path, valid: dict) -> None:
    # Another model's index, poisoned: trusting it would give other prototypes.
    torch.save({**valid, "model_hash": "0" * 64, "gram": valid["gram"] * 3}, index_file)


def _this_models_hash_copied_in(index_file: Path, valid: dict) -> None:
    # Another model's tensors under this checkpoint's hash: the seal over the content refuses it.
    torch.save({**valid, "gram": valid["gram"] * 0}, index_file)


@pytest.mark.parametrize("spoil", [_garbage, _foreign_checkpoint, _this_models_hash_copied_in])
def test_a_corrupted_or_foreign_index_is_rebuilt_not_trusted(
    original: Original, naive_reference: Path, tmp_path: Path, spoil
) -> None:
    reference_index = index_path(unlearning_record(naive_reference)["original_ckpt"])
    valid = torch.load(reference_index, weights_only=True)
    ckpt = original.copy_to(tmp_path / "original")
    spoil(index_path(ckpt), valid)

    result = unlearn(tmp_path / "runs", "naive", ckpt, manifest=original.manifest)

    assert unlearning_record(result)["index_built"] is True
    assert torch.equal(fc_weight(result), fc_weight(naive_reference))
    rebuilt = torch.load(index_path(ckpt), weights_only=True)
    assert rebuilt["model_hash"] == model_hash(ckpt)
    torch.testing.assert_close(rebuilt["gram"], valid["gram"], rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- cumulative requests


def test_cumulative_requests_remove_the_union_once(original: Original, tmp_path: Path) -> None:
    labels = DigitsDataModule(split_manifest=str(original.manifest))._source.train_labels
    ones = torch.nonzero(labels == 1).flatten().tolist()
    threes = torch.nonzero(labels == 3).flatten().tolist()
    request_a = ones[:12] + threes[:4]
    request_b = ones[8:20] + threes[2:6]  # overlaps A in 4 + 2 samples
    union = sorted(set(request_a) | set(request_b))
    files = {
        name: write_indices(tmp_path / f"{name}.json", ids)
        for name, ids in (("a", request_a), ("b", request_b), ("union", union))
    }

    def request(ckpt: Path, name: str, *args: str) -> Path:
        return unlearn(
            tmp_path / "runs",
            f"{ckpt.parent.name}-{name}",
            ckpt,
            "--data.init_args.forget",
            "indices",
            "--data.init_args.forget_indices_file",
            str(files[name]),
            *args,
        )

    sequence = original.copy_to(tmp_path / "sequence")
    request(sequence, "a", "--model.init_args.cumulative", "true")
    after_b = request(sequence, "b", "--model.init_args.cumulative", "true")
    once = request(original.copy_to(tmp_path / "once"), "union")

    torch.testing.assert_close(fc_weight(after_b), fc_weight(once), rtol=0, atol=1e-6)
    assert unlearning_record(after_b)["removed_samples"] == len(union)
    index = torch.load(index_path(sequence), weights_only=True)
    assert index["removed_indices"] == union
    record = json.loads(record_path(sequence).read_text())
    assert [r["ids"] for r in record["requests"]] == [sorted(request_a), sorted(request_b)]
    assert [r["result_checkpoint"] for r in record["requests"]] == [
        str(result_checkpoint(tmp_path / "runs" / "digits" / f"sequence-{name}").resolve())
        for name in ("a", "b")
    ]
    # The cumulative result says what it removed: the union, in its split.json and checkpoint.
    split = after_b.parents[1] / "split.json"
    assert json.loads(split.read_text())["forget_indices"] == union
    embedded = load_checkpoint(after_b)["ps_lightning"]["data"]["split_manifest"]
    assert embedded["forget_indices"] == union and embedded["num_forget"] == len(union)
    # B alone (not cumulative) is a different model: the union really was removed.
    b_alone = request(original.copy_to(tmp_path / "alone"), "b")
    assert not torch.allclose(fc_weight(b_alone), fc_weight(after_b), atol=1e-4)


def test_repeating_a_cumulative_request_removes_nothing_more(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    args = ("--model.init_args.cumulative", "true")
    first = unlearn(tmp_path / "runs", "first", ckpt, *args, manifest=original.manifest)
    again = unlearn(tmp_path / "runs", "again", ckpt, *args, manifest=original.manifest)

    torch.testing.assert_close(fc_weight(again), fc_weight(first), rtol=0, atol=1e-6)
    assert unlearning_record(again)["removed_samples"] == DEFAULT_NUM_FORGET


# --------------------------------------------------------------------------- early stopping


def test_early_stop_on_stops_ps_before_the_last_epoch(original: Original, tmp_path: Path) -> None:
    epochs = 300
    result = unlearn(
        tmp_path / "runs",
        "ps",
        original.copy_to(tmp_path / "original"),
        "--model.init_args.early_stop",
        "on",
        "--model.init_args.epochs",
        str(epochs),
        "--model.init_args.lr",
        "0.3",
        manifest=original.manifest,
        config="ps.yaml",
    )

    record = unlearning_record(result)
    assert record["early_stop_used"] is True
    assert record["stopped_at_epoch"] is not None
    assert 0 <= record["stopped_at_epoch"] < epochs


@pytest.mark.parametrize(
    ("ratio", "expected"), [("0.1", True), ("1.0", False)], ids=["some-of-a-class", "whole-class"]
)
def test_early_stop_auto_watches_the_heldout_level_only_for_part_of_a_class(
    original: Original, tmp_path: Path, ratio: str, expected: bool
) -> None:
    result = unlearn(
        tmp_path / "runs",
        "ps",
        original.copy_to(tmp_path / "original"),
        "--model.init_args.method",
        "ps",  # the shipped auto runs the last block on a whole class
        "--model.init_args.early_stop",
        "auto",
        "--model.init_args.epochs",
        "3",
        "--data.init_args.forget_ratio",
        ratio,  # a fresh request drawn from the same training set: no manifest
        config="ps.yaml",
    )

    record = unlearning_record(result)
    assert record["early_stop_used"] is expected
    assert record["whole_class_stop"] is not expected  # the whole class: its own stop
    if not expected:
        assert record["removed_samples"] > DEFAULT_NUM_FORGET  # the whole class: 146 samples


# --------------------------------------------------------------------------- bad input


def _other_class_count(original: Original, folder: Path) -> Path:
    model = LeNet5(num_classes=5)
    data = load_checkpoint(original.ckpt)["ps_lightning"]["data"]
    path = folder / "five.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "ps_lightning": classifier_record(model, data)}, path
    )
    return path


def _not_a_checkpoint(original: Original, folder: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("this is not a checkpoint\n")
    return path


BAD_ORIGINALS = {
    "missing": (lambda original, folder: folder / "missing.ckpt", "not found"),
    "not a checkpoint": (_not_a_checkpoint, "could not be read"),
    "another class count": (_other_class_count, "num_classes=5"),
}


@pytest.mark.parametrize(("make", "message"), BAD_ORIGINALS.values(), ids=BAD_ORIGINALS.keys())
def test_bad_original_checkpoint_is_refused_before_any_run_directory(
    original: Original, tmp_path: Path, make, message: str
) -> None:
    bad = make(original, tmp_path)
    save_dir = tmp_path / "runs"
    with pytest.raises(Exception, match=message):
        unlearn(save_dir, "naive", bad, manifest=original.manifest)
    assert nothing_written(save_dir)


def test_retrained_model_given_as_original_is_refused(
    original: Original, retrain_ckpt: Path, tmp_path: Path
) -> None:
    save_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="train_on='retain'"):
        unlearn(save_dir, "naive", retrain_ckpt, manifest=original.manifest)
    assert nothing_written(save_dir)


def test_manifest_of_another_training_set_is_refused(original: Original, tmp_path: Path) -> None:
    # A well-formed manifest (its content hash recomputed) drawn from other data.
    foreign = tmp_path / "split.json"
    write_manifest(foreign, {**json.loads(original.manifest.read_text()), "fingerprint": "0" * 16})
    save_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="fingerprint"):
        unlearn(save_dir, "naive", original.ckpt, manifest=foreign)
    assert nothing_written(save_dir)


def test_unknown_method_is_refused(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_dir = tmp_path / "runs"
    # The command's parser refuses it, naming the choices (the option is typed).
    with pytest.raises(SystemExit):
        unlearn(
            save_dir,
            "foo",
            original.ckpt,
            "--model.init_args.method",
            "foo",
            manifest=original.manifest,
        )
    assert "'naive', 'ps', 'naive+ps'" in capsys.readouterr().err
    assert nothing_written(save_dir)
    # The module itself refuses it too, when built in Python.
    with pytest.raises(ValueError, match="method='foo'"):
        PSUnlearnModule(str(original.ckpt), method="foo")  # type: ignore[arg-type]


def test_naive_ps_refuses_a_whole_class_request_in_one_line_naming_ps_before_any_file(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_dir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exited:
        cli_main(
            [
                "fit",
                "--config",
                str(REPO_ROOT / "configs" / "digits" / "naive_ps.yaml"),
                "--model.init_args.original_ckpt",
                str(original.ckpt),
                "--data.init_args.split_manifest",
                "null",
                "--data.init_args.forget_ratio",
                "1.0",
                "--trainer.logger.init_args.save_dir",
                str(save_dir),
                "--run",
                "whole-class",
            ]
        )
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "method 'naive' refuses a whole-class request" in line and "method 'ps'" in line
    assert "class(es) [1]" in line
    # Refused before the run folder: the same --run with method ps is a fresh run.
    assert nothing_written(save_dir)
    # The API says the same, also for naive+ps without PS epochs (Naive PS alone); a request
    # that leaves one sample of the class is Naive PS's, and naive+ps with epochs runs.
    unlearner = Unlearner.from_checkpoint(original.copy_to(tmp_path / "api"), DigitsDataModule())
    for settings in ({"method": "naive"}, {"method": "naive+ps", "epochs": 0}):
        with pytest.raises(ValueError, match="refuses a whole-class request"):
            unlearner.forget(classes=[1], ratio=1.0, **settings)
    almost = unlearner.forget(classes=[1], ratio=0.99, method="naive")
    assert almost.record["method_run"] == "naive"


def test_cumulative_naive_requests_that_together_empty_a_class_are_refused(
    original: Original, tmp_path: Path
) -> None:
    labels = DigitsDataModule(split_manifest=str(original.manifest))._source.train_labels
    ones = torch.nonzero(labels == 1).flatten().tolist()
    sequence = original.copy_to(tmp_path / "sequence")

    def request(name: str, ids: list[int]) -> Path:
        return unlearn(
            tmp_path / "runs",
            name,
            sequence,
            "--data.init_args.forget",
            "indices",
            "--data.init_args.forget_indices_file",
            str(write_indices(tmp_path / f"{name}.json", ids)),
            "--model.init_args.cumulative",
            "true",
        )

    request("first-half", ones[: len(ones) // 2])
    with pytest.raises(ValueError, match=r"refuses a whole-class request.*class\(es\) \[1\]"):
        request("second-half", ones[len(ones) // 2 :])
    assert not (tmp_path / "runs" / "digits" / "second-half").exists()
    # The ledger still holds the first half alone.
    record = json.loads(record_path(sequence).read_text())
    assert [r["ids"] for r in record["requests"]] == [sorted(ones[: len(ones) // 2])]


def test_cumulative_requests_without_the_index_are_refused(
    original: Original, tmp_path: Path
) -> None:
    save_dir = tmp_path / "runs"
    for args in (("--model.init_args.method", "ps"), ("--model.init_args.use_index", "false")):
        with pytest.raises(ValueError, match="cumulative"):
            unlearn(
                save_dir,
                "c",
                original.ckpt,
                "--model.init_args.cumulative",
                "true",
                *args,
                manifest=original.manifest,
            )
    assert nothing_written(save_dir)


def test_unlearning_never_writes_over_an_existing_result(
    original: Original, tmp_path: Path
) -> None:
    root = tmp_path / "no-logger"
    existing = root / "checkpoints" / "model.ckpt"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"a user's file")
    trainer = L.Trainer(logger=False, default_root_dir=str(root), enable_progress_bar=False)
    module = PSUnlearnModule(str(original.ckpt), method="naive", num_classes=10, in_channels=1)
    with pytest.raises(FileExistsError, match="never overwrites"):
        trainer.fit(module, datamodule=DigitsDataModule(split_manifest=str(original.manifest)))
    assert existing.read_bytes() == b"a user's file"


def test_an_early_stop_that_keeps_the_original_head_says_so(
    original: Original,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A huge step overshoots the held-out level by far: the state before it is the closest.
    ckpt = original.copy_to(tmp_path / "original")
    with caplog.at_level("INFO"):
        result = unlearn(
            tmp_path / "runs",
            "ps",
            ckpt,
            "--model.init_args.early_stop",
            "on",
            "--model.init_args.lr",
            "100",
            manifest=original.manifest,
            config="ps.yaml",
        )

    record = unlearning_record(result)
    assert record["restored_step"] == 0 and record["ps_kept_start_state"] is True
    # The record carries the sentence the run summary and the tables print.
    assert record["early_stop_outcome"].startswith("kept the starting head")
    head = _assert_only_head_changed(result, ckpt)
    assert torch.equal(head["net.fc.weight"], head["original.net.fc.weight"])
    assert torch.equal(head["net.fc.bias"], head["original.net.fc.bias"])
    # Said once by the command, in its summary (the Python API logs it instead).
    said = caplog.text + capsys.readouterr().out
    assert said.count("result equals the original model") == 1
    # TensorBoard says so too: the curves show the epochs tried, the saved head is the start.
    events = tensorboard_events(tmp_path / "runs" / "digits" / "ps")
    (kept,) = events.Scalars("ps/saved/kept_start_state")
    assert kept.value == 1.0
    (saved,) = events.Scalars("ps/saved/forget_acc")
    start = events.Scalars("ps/forget_acc")[0]
    assert start.step == 0 and saved.value == start.value
    assert "ps_kept_start_state" in logged_text(events, "ps/early_stop")
    assert "ps/prototype_shift" in events.Tags()["images"]


def test_the_saved_head_is_logged_after_the_early_stop_restored_it(original: Original) -> None:
    module = PSUnlearnModule(str(original.ckpt), early_stop="on", num_classes=10, in_channels=1)
    logged: dict[str, float] = {}
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.update(metrics))
    module.trainer = SimpleNamespace(should_stop=True, current_epoch=1, logger=logger)
    head = module.model.prototypes
    features = torch.randn(
        200, module.model.net.feature_dim, generator=torch.Generator().manual_seed(0)
    )
    labels = head(features).argmax(dim=1)  # every sample right at the start
    forgotten = labels == labels.mode().values
    for split, rows in (("forget", forgotten), ("retain", ~forgotten)):
        module.cache[split] = {"features": features[rows], "labels": labels[rows]}
    module.stopper = ClosestToHeldoutLevel(heldout_level=0.5)
    module.stopper.reached(0.6, 0, head)  # the start: the closest state checked
    head.bias.data[labels.mode().values] -= 1000.0  # a step that overshoots by far

    module.on_train_end()

    assert logged == {
        "ps/saved/forget_acc": 1.0,
        "ps/saved/retain_acc": 1.0,
        "ps/saved/kept_start_state": 1.0,
    }


def test_what_the_early_stop_did_is_told_apart() -> None:
    assert early_stop_outcome({"early_stop_used": False, "stopped_at_epoch": None}) is None
    naive = {"method": "naive", "epochs": 50, "early_stop": "auto"}
    assert early_stop_outcome({"early_stop_used": False, "config": naive}) is None
    off = {"method": "ps", "epochs": 50, "early_stop": "off"}
    assert early_stop_outcome({"early_stop_used": False, "config": off}) == "off (early_stop: off)"
    whole_class = {"whole_class_stop": True, "stopped_at_epoch": 74, "epoch_limit": 500}
    assert early_stop_outcome(whole_class) == (
        "stopped at epoch 74 of a whole-class request, when no forget sample was classified as "
        "its class any more"
    )
    whole_class["stopped_at_epoch"] = None
    assert early_stop_outcome(whole_class) == (
        "ran all 500 epochs of a whole-class request without reaching forget accuracy 0"
    )
    kept = early_stop_outcome(
        {"early_stop_used": True, "ps_kept_start_state": True, "restored_step": 0}
    )
    assert kept is not None and kept.startswith("kept the starting head")
    ran = early_stop_outcome(
        {"early_stop_used": True, "stopped_at_epoch": None, "restored_step": 50}
    )
    every_epoch = "let every epoch run without reaching the held-out level"
    assert ran == f"{every_epoch}; kept the head of step 50"
    last = early_stop_outcome(
        {"early_stop_used": True, "stopped_at_epoch": None, "restored_step": None}
    )
    assert last == f"{every_epoch}; kept the last epoch's head"


def test_a_blank_prototype_shift_figure_says_why() -> None:
    note = early_stop_note(
        {
            "early_stop_used": True,
            "ps_kept_start_state": True,
            "restored_step": 0,
            "stopped_at_epoch": 1,
            "config": {"method": "ps"},
        }
    )
    assert note is not None and "equals the original model" in note

    figure = prototype_shift_figure(torch.zeros(10), torch.zeros(10), [1], note)

    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert texts == ["unchanged"] * 2
    assert figure.get_suptitle().replace("\n", " ") == note


def test_a_prototype_shift_figure_draws_the_shifts() -> None:
    bias_shift = torch.zeros(10)
    bias_shift[1] = 0.5

    figure = prototype_shift_figure(torch.zeros(10), bias_shift, [1])

    weight_axes, bias_axes = figure.axes
    assert [text.get_text() for text in weight_axes.texts] == ["unchanged"]
    assert [patch.get_height() for patch in bias_axes.patches] == bias_shift.tolist()
    assert bias_axes.patches[1].get_facecolor() != bias_axes.patches[0].get_facecolor()


# --------------------------------------------------------------------------- stable results


def test_naive_ps_gives_the_same_result_with_one_or_two_threads(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    _, features, _ = _features_by_hand(original)
    threads = torch.get_num_threads()
    heads = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            result = unlearn(
                tmp_path / "runs",
                f"threads{count}",
                ckpt,
                "--model.init_args.use_index",
                "false",  # each run computes G itself, under its own thread count
                "--model.init_args.surgery_bias",
                "true",
                manifest=original.manifest,
            )
            state = load_checkpoint(result)["state_dict"]
            heads.append((state["net.fc.weight"], state["net.fc.bias"]))
    finally:
        torch.set_num_threads(threads)

    (weight1, bias1), (weight2, bias2) = heads
    torch.testing.assert_close(weight1, weight2, rtol=0, atol=1e-6)
    torch.testing.assert_close(bias1, bias2, rtol=0, atol=1e-6)
    predictions1 = (features @ weight1.T + bias1).argmax(dim=1)
    predictions2 = (features @ weight2.T + bias2).argmax(dim=1)
    assert torch.equal(predictions1, predictions2)


def test_ps_epochs_leave_the_process_thread_setting_as_they_found_it(
    original: Original, tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        unlearn(
            tmp_path / "runs",
            "ps",
            original.copy_to(tmp_path / "original"),
            *FEW_EPOCHS,
            manifest=original.manifest,
            config="ps.yaml",
        )
        assert torch.get_num_threads() == 2  # the epochs ran on HEAD_THREADS, then restored
    finally:
        torch.set_num_threads(threads)


class _SeesNvmlCheck(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.during = os.environ.get(NVML_CHECK)
        self.threads = torch.get_num_threads()


@pytest.mark.parametrize("block", [False, True], ids=["ps", "block"])
@pytest.mark.parametrize("driver", [False, True])
def test_ps_epochs_skip_the_nvml_probe_only_without_a_driver_and_restore_it(
    driver: bool, block: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NVML_CHECK, "1")
    monkeypatch.setattr(ps_threads, "nvml_loadable", lambda: driver)
    seen = _SeesNvmlCheck()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[HeadThreads(), seen],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    head = torch.nn.Linear(4, 2)

    class Head(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.head = head
            self.block = object() if block else None  # what method block sets

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return F.cross_entropy(self.head(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters())

    rows = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    before = torch.get_num_threads()
    process_threads = HEAD_THREADS + 1
    try:
        torch.set_num_threads(process_threads)
        trainer.fit(Head(), torch.utils.data.DataLoader(rows, batch_size=4))
        # A network block trains on the process's threads, PS's head on HEAD_THREADS.
        assert seen.threads == (process_threads if block else HEAD_THREADS)
        assert torch.get_num_threads() == process_threads
    finally:
        torch.set_num_threads(before)
    assert seen.during == ("1" if driver else "0")
    assert os.environ[NVML_CHECK] == "1"  # restored after the epochs


def test_auto_runs_a_whole_class_request_until_no_forget_sample_is_classified_as_its_class(
    original: Original, tmp_path: Path
) -> None:
    # The paper's MNIST values (bias only, lr 0.01, 50 epochs) with the anchor: too few steps to
    # forget the class by epoch count alone; `auto` goes on until it is forgotten.
    unlearner = Unlearner.from_checkpoint(
        original.copy_to(tmp_path / "original"), DigitsDataModule()
    )
    settings = {"preset": "paper", "retain_anchor": 1.0, "epochs": 10}
    counted = unlearner.forget(classes=[1], ratio=1.0, early_stop="off", **settings)
    stopped = unlearner.forget(classes=[1], ratio=1.0, early_stop="auto", **settings)
    assert counted.metrics["forget_acc"] > 0.5
    assert stopped.metrics["forget_acc"] == 0.0
    assert stopped.record["whole_class_stop"] and stopped.record["epoch_limit"] == 100
    assert 10 <= stopped.record["stopped_at_epoch"] < 100
    assert stopped.metrics["retain_acc"] >= counted.metrics["retain_acc"] - 0.05
    # naive+ps: Naive PS has forgotten the class; its PS epochs still run, to repair the rest
    # (Naive PS leaves the bias as it is: only PS's epochs move it).
    both = unlearner.forget(classes=[1], ratio=1.0, method="naive+ps", early_stop="auto")
    assert not both.record["whole_class_stop"] and both.record["stopped_at_epoch"] is None
    original_model, _ = load_classifier(str(original.ckpt))
    assert not torch.equal(both.model.prototypes.bias, original_model.prototypes.bias)
