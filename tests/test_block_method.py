"""Method block (the network's last block retrained on the retain set) and method auto, which
gives each request the method measured best for its kind."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from unlearning_fixtures import Original, original, unlearn, unlearning_record

from ps_lightning import Unlearner
from ps_lightning.data import DigitsDataModule
from ps_lightning.data.requests import targets_few_classes
from ps_lightning.harness.chain import drop_unread_block_options
from ps_lightning.models.classifier import load_classifier
from ps_lightning.models.last_block import split_last_block
from ps_lightning.models.lenet import LeNet5Net
from ps_lightning.models.resnet_cifar import CifarResNetNet
from ps_lightning.models.resnet_torchvision import resnet18_net
from ps_lightning.models.vgg import VGG16Net
from ps_lightning.prototype_surgery.block_retrain import reinitialise, stop_rows
from ps_lightning.prototype_surgery.options import OPTIMIZERS

__all__ = ["original"]  # a fixture used below


def _ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (LeNet5Net, (2, 1, 32, 32)),
        (CifarResNetNet, (2, 3, 32, 32)),
        (resnet18_net, (2, 3, 32, 32)),
        (VGG16Net, (2, 3, 64, 64)),
    ],
    ids=["lenet5", "resnet20", "resnet18", "vgg16"],
)
def test_the_last_block_after_the_trunk_gives_the_networks_features(build, shape) -> None:
    torch.manual_seed(0)
    net = build().eval()
    images = torch.randn(shape)

    trunk, block = split_last_block(net)

    torch.testing.assert_close(block(trunk(images)), net.forward_features(images))
    # The split shares the network's own parameters, and only the head is in neither part.
    assert not _ids(trunk) & _ids(block)
    assert _ids(trunk) | _ids(block) == _ids(net) - _ids(net.fc)
    assert _ids(block), "the block must have parameters to retrain"


def test_a_network_that_names_no_last_block_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"last_block\(\).*or use method 'ps'"):
        split_last_block(nn.Linear(4, 2))


def test_reinitialise_draws_the_same_fresh_start_from_a_seed_and_keeps_the_callers_state() -> None:
    first, second = nn.Linear(8, 4), nn.Linear(8, 4)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    reinitialise(first, 5)
    reinitialise(second, 5)
    torch.testing.assert_close(first.weight, second.weight, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_request_within_a_few_classes_is_told_from_one_spread_over_all() -> None:
    labels = torch.arange(10).repeat(20)
    assert targets_few_classes(labels[labels == 1][:5], 10)  # part of class 1
    assert targets_few_classes(labels[(labels == 1) | (labels == 7)], 10)
    assert not targets_few_classes(labels[::3], 10)  # a random draw touches every class
    assert not targets_few_classes(labels[labels < 6], 10)  # six of ten classes


@pytest.mark.parametrize(
    ("request_args", "method_run"),
    [
        ((), "ps"),  # the config's request: 10% of class 1
        (("--data.init_args.forget_ratio", "1.0"), "block"),  # the whole class
        (("--data.init_args.forget", "random"), "block"),  # spread over every class
    ],
    ids=["part-of-a-class", "whole-class", "random"],
)
def test_method_auto_gives_each_request_kind_its_method(
    original: Original, tmp_path: Path, request_args: tuple[str, ...], method_run: str
) -> None:
    result = unlearn(
        tmp_path / "runs",
        "auto",
        original.copy_to(tmp_path / "original"),
        "--model.init_args.method",
        "auto",
        "--model.init_args.epochs",
        "2",
        "--model.init_args.block_epochs",
        "2",
        *request_args,
        config="ps.yaml",
    )
    record = unlearning_record(result)
    assert record["config"]["method"] == "auto"
    assert record["method_run"] == method_run


def test_block_forgets_a_whole_class_in_the_features_and_leaves_the_trunk_as_it_was(
    original: Original, tmp_path: Path
) -> None:
    unlearner = Unlearner.from_checkpoint(
        original.copy_to(tmp_path / "original"), DigitsDataModule()
    )
    result = unlearner.forget(classes=[1], ratio=1.0, method="block")
    original_model, _ = load_classifier(str(original.ckpt))
    original_net = original_model.net

    net = result.model.net
    trunk, block = split_last_block(net)
    original_trunk, original_block = split_last_block(original_net)
    for mine, theirs in zip(trunk.parameters(), original_trunk.parameters(), strict=True):
        assert torch.equal(mine, theirs)  # frozen: bitwise the original's
    # Drawn afresh, not fine-tuned: the first layer's rows no longer resemble the original's.
    fresh, old = block[1].weight.flatten(), original_block[1].weight.flatten()
    assert torch.nn.functional.cosine_similarity(fresh, old, dim=0) < 0.5
    assert result.metrics["forget_acc"] == 0.0  # never saw the class
    assert result.metrics["retain_acc"] >= 0.8
    record = result.record
    assert record["method_run"] == "block" and record["block_target_retain_acc"] > 0.8
    stopped = record["stopped_at_epoch"] is not None
    assert stopped == (record["block_retain_acc"] >= record["block_target_retain_acc"])
    # The head's fresh start is recorded as the initial head a later Naive PS request needs.
    start = copy.deepcopy(nn.ModuleList([original_block, original_net.fc]))
    reinitialise(start, DigitsDataModule().hparams.seed)
    assert torch.equal(result.model.initial_prototypes, start[1].weight)
    # The result counts the forget samples whose prediction moved off the original model's.
    data = DigitsDataModule(forget="classes", forget_classes=[1], forget_ratio=1.0)
    data.setup("fit")
    images = data.model_input(data.samples("forget").tensors[0])
    with torch.no_grad():
        moved = original_net.eval()(images).argmax(1) != net.eval()(images).argmax(1)
    assert result.changed_predictions == int(moved.sum()) > 0


def test_the_bench_key_leaves_out_block_options_only_where_the_method_never_reads_them() -> None:
    for method in ("naive", "ps", "naive+ps"):
        init_args = {"method": method, "lr": 0.03, "block_epochs": 10, "block_lr": 2e-3}
        init_args |= {"block_batch_size": 1024, "block_stop_rows": 500}
        drop_unread_block_options(init_args)
        assert init_args == {"method": method, "lr": 0.03}  # keys of older steps stay valid
    for method in ("block", "auto"):
        init_args = {"method": method, "block_epochs": 10, "block_lr": 2e-3}
        drop_unread_block_options(init_args)
        assert init_args == {"method": method, "block_epochs": 10, "block_lr": 2e-3}
        # An option added later, at the value that does what steps did before it, leaves the
        # key as it was; any other value enters the key.
        for name in ("block_batch_size", "block_min_steps", "block_stop_rows"):
            for value, key in ((None, {}), (1024, {name: 1024})):
                init_args = {"method": method, "block_lr": 2e-3, name: value}
                drop_unread_block_options(init_args)
                assert init_args == {"method": method, "block_lr": 2e-3, **key}


def test_the_block_trains_in_batches_of_its_own_size_when_given_one(
    original: Original, tmp_path: Path
) -> None:
    data = DigitsDataModule(forget="classes", forget_classes=[1], forget_ratio=1.0)
    data.prepare_data()
    data.setup("fit")
    retain = len(data.train_indices("retain"))
    unlearner = Unlearner.from_checkpoint(original.copy_to(tmp_path / "original"), data)
    for size in (None, 96):
        result = unlearner.forget(
            classes=[1],
            ratio=1.0,
            method="block",
            block_epochs=1,
            block_batch_size=size,
            block_min_steps=None,  # one epoch, whatever its steps
        )
        batch = size or data.hparams.batch_size
        assert result.record["block_steps"] == math.ceil(retain / batch)


def test_a_small_retain_set_gets_the_epochs_its_minimum_of_steps_takes(
    original: Original, tmp_path: Path
) -> None:
    data = DigitsDataModule(forget="classes", forget_classes=[1], forget_ratio=1.0)
    data.setup("fit")
    per_epoch = math.ceil(len(data.train_indices("retain")) / 256)
    unlearner = Unlearner.from_checkpoint(original.copy_to(tmp_path / "original"), data)
    for min_steps, epochs in ((None, 2), (per_epoch, 2), (5 * per_epoch + 1, 6)):
        result = unlearner.forget(
            classes=[1],
            ratio=1.0,
            method="block",
            block_epochs=2,
            block_batch_size=256,
            block_min_steps=min_steps,
        )
        assert result.record["epoch_limit"] == epochs


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_block_updates_its_tensors_with_the_fused_optimizer_on_a_cpu(
    original: Original, tmp_path: Path, optimizer: str
) -> None:
    data = DigitsDataModule(forget="classes", forget_classes=[1], forget_ratio=1.0)
    unlearner = Unlearner.from_checkpoint(original.copy_to(tmp_path / "original"), data)
    result = unlearner.forget(
        classes=[1], ratio=1.0, method="block", block_epochs=1, optimizer=optimizer
    )
    (used,) = result._module.trainer.optimizers
    assert type(used) is OPTIMIZERS[optimizer] and used.defaults["fused"] is True


def test_the_block_clips_its_gradients_under_mixed_precision_when_asked(
    original: Original, tmp_path: Path
) -> None:
    # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer.
    result = unlearn(
        tmp_path / "runs",
        "clipped",
        original.copy_to(tmp_path / "original"),
        "--model.init_args.method=block",
        "--model.init_args.block_epochs=1",
        "--model.init_args.block_min_steps=null",  # one epoch on any CPU
        "--data.init_args.forget_ratio=1.0",
        "--trainer.gradient_clip_val=1.0",
        "--trainer.precision=bf16-mixed",
        config="ps.yaml",
    )
    assert unlearning_record(result)["method_run"] == "block"


def test_the_stop_rows_are_a_fixed_sample_of_the_retain_rows_or_all_of_them() -> None:
    assert stop_rows(40, None, 0) is None and stop_rows(40, 40, 0) is None  # every row
    sample = stop_rows(1000, 100, 3)
    assert len(sample.unique()) == 100 and torch.equal(sample, sample.sort().values)
    assert torch.equal(sample, stop_rows(1000, 100, 3))
    assert not torch.equal(sample, stop_rows(1000, 100, 4))


def test_the_block_judges_its_stop_on_the_sample_it_is_given(
    original: Original, tmp_path: Path
) -> None:
    data = DigitsDataModule(forget="classes", forget_classes=[1], forget_ratio=1.0)
    data.setup("fit")
    unlearner = Unlearner.from_checkpoint(original.copy_to(tmp_path / "original"), data)
    result = unlearner.forget(
        classes=[1], ratio=1.0, method="block", block_epochs=1, block_stop_rows=50
    )
    images, labels = data.samples("retain").tensors
    rows = stop_rows(len(labels), 50, data.hparams.seed)
    original_net = load_classifier(str(original.ckpt))[0].net.eval()
    with torch.no_grad():
        correct = original_net(data.model_input(images)).argmax(1) == labels
    target = correct[rows].float().mean().item()
    assert result.record["block_target_retain_acc"] == pytest.approx(target, abs=1e-6)
    assert target != pytest.approx(correct.float().mean().item(), abs=1e-6)  # tells them apart


def test_the_api_runs_the_presets_method_unless_told(original: Original, tmp_path: Path) -> None:
    unlearner = Unlearner.from_checkpoint(
        original.copy_to(tmp_path / "original"), DigitsDataModule()
    )
    shipped = unlearner.forget([3, 17, 42], epochs=1, block_epochs=1)
    told = unlearner.forget([3, 17, 42], method="block", epochs=1, block_epochs=1)
    assert shipped.record["config"]["method"] == "auto"  # configs/digits/ps.yaml
    assert shipped.record["method_run"] == "ps"  # three samples: a request within a few classes
    assert told.record["config"]["method"] == "block" and told.record["method_run"] == "block"
