"""UnlearningDataModule: splits, manifests, loaders and the device-side batch transform."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import fake_trainer, listing

from ps_lightning.data import DigitsDataModule, MNISTDataModule, UnlearningDataModule
from ps_lightning.data.loaders import same_order_loader
from ps_lightning.data.manifest import MANIFEST_NAME, fingerprint, write_manifest
from ps_lightning.data.samplers import AugmentedImageBatch, ImageBatch, TensorSamples
from ps_lightning.data.sources import Source
from ps_lightning.files import atomic_write

NUM_TRAIN, NUM_TEST = 200, 60


def _encoded(n: int, is_test: bool) -> torch.Tensor:
    """1×8×8 uint8 images whose first pixels spell their own index (and the split)."""
    images = torch.full((n, 1, 8, 8), 200, dtype=torch.uint8)
    index = torch.arange(n)
    images[:, 0, 0, 0] = (index % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (index // 256).to(torch.uint8)
    images[:, 0, 0, 2] = int(is_test)
    return images


def decode(images: torch.Tensor, is_test: bool = False) -> list[int]:
    assert (images[:, 0, 0, 2] == int(is_test)).all(), "a sample from the wrong set"
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


class IndexedDataModule(UnlearningDataModule):
    """Synthetic data whose every image says which sample it is: loaders can be audited."""

    dataset_name = "indexed"
    num_classes = 4
    in_channels = 1
    mean = (0.5,)
    std = (0.25,)
    crop_padding = 2
    horizontal_flip = True

    def load_source(self) -> Source:
        return Source(
            _encoded(NUM_TRAIN, False),
            torch.arange(NUM_TRAIN) % 4,
            _encoded(NUM_TEST, True),
            torch.arange(NUM_TEST) % 4,
            ["a", "b", "c", "d"],
        )


def loader_indices(loader, is_test: bool = False) -> list[int]:
    return [i for images, _ in loader for i in decode(images, is_test)]


# --------------------------------------------------------------------------- splits


def test_digits_default_request_forgets_ten_percent_of_class_one() -> None:
    dm = DigitsDataModule()
    labels = dm.samples("train").tensors[1]
    assert len(labels) == 1437
    assert int((labels == 1).sum()) == 146
    assert len(dm.forget_indices) == 15  # round(0.1 · 146)
    assert (labels[dm.forget_indices] == 1).all()


def test_forget_and_retain_are_disjoint_and_cover_the_training_set() -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.3)
    forget, retain = dm.forget_indices.tolist(), dm.retain_indices.tolist()
    assert len(forget) == 60
    assert set(forget).isdisjoint(retain)
    assert sorted(forget + retain) == list(range(NUM_TRAIN))


def test_named_splits_hold_the_right_samples() -> None:
    dm = IndexedDataModule(forget="classes", forget_classes=[2], forget_ratio=0.5, seed=3)
    forget_images, forget_labels = dm.samples("forget").tensors
    assert decode(forget_images) == dm.forget_indices.tolist()
    assert (forget_labels == 2).all()
    assert decode(dm.samples("retain").tensors[0]) == dm.retain_indices.tolist()
    assert decode(dm.samples("test").tensors[0], True) == dm.report_indices.tolist()
    assert decode(dm.samples("calibration").tensors[0], True) == dm.calibration_indices.tolist()
    assert sorted(dm.report_indices.tolist() + dm.calibration_indices.tolist()) == list(
        range(NUM_TEST)
    )
    with pytest.raises(KeyError, match="unknown split 'holdout'"):
        dm.samples("holdout")


def test_forgets_whole_classes_only_for_whole_classes() -> None:
    assert IndexedDataModule(forget_classes=[0, 3], forget_ratio=1.0).forgets_whole_classes
    assert not IndexedDataModule(forget_classes=[0, 3], forget_ratio=0.5).forgets_whole_classes


def test_state_dict_records_the_manifest_and_train_on() -> None:
    dm = IndexedDataModule(train_on="retain")
    state = dm.state_dict()
    assert state["train_on"] == "retain"
    assert state["split_manifest"]["forget_indices"] == dm.forget_indices.tolist()


# --------------------------------------------------------------------------- manifest


def test_setup_writes_manifest_that_reproduces_the_split(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = DigitsDataModule(forget_classes=[3, 7], forget_ratio=0.2, seed=5)
    first.trainer = fake_trainer(log_dir=run_dir)
    first.setup("fit")
    # Written whole and atomically: no temporary file next to it.
    assert listing(run_dir) == [MANIFEST_NAME]
    manifest = json.loads((run_dir / MANIFEST_NAME).read_text())

    source = first._source
    assert manifest["dataset"] == "digits"
    transform = {"mean": [0.30], "std": [0.38]}
    assert manifest["fingerprint"] == fingerprint(
        source.train_images, source.train_labels, transform
    )
    assert manifest["num_train"] == 1437 and manifest["num_test"] == 360
    assert manifest["num_classes"] == 10
    assert manifest["request"] == {"kind": "classes", "classes": [3, 7], "ratio": 0.2, "seed": 5}
    assert manifest["num_forget"] == 29 + 29  # round(0.2 · 146), round(0.2 · 143)
    assert manifest["num_retain"] == 1437 - 58
    assert manifest["forget_indices"] == first.forget_indices.tolist()
    assert manifest["calibration_test_indices"] == first.calibration_indices.tolist()

    second = DigitsDataModule(
        forget_classes=[3, 7],
        forget_ratio=0.2,
        seed=5,
        split_manifest=str(run_dir / MANIFEST_NAME),
        train_on="retain",
    )
    assert torch.equal(second.forget_indices, first.forget_indices)
    assert torch.equal(second.retain_indices, first.retain_indices)
    assert torch.equal(second.calibration_indices, first.calibration_indices)
    assert torch.equal(second.report_indices, first.report_indices)


def test_split_manifest_is_loaded_not_redrawn(tmp_path: Path) -> None:
    # A manifest whose indices a fresh draw could never produce: the loaded split must be its.
    dm = DigitsDataModule()
    manifest = dict(dm.manifest, forget_indices=[0, 1, 2], calibration_test_indices=[5, 6])
    path = tmp_path / "split.json"
    write_manifest(path, manifest)
    loaded = DigitsDataModule(split_manifest=str(path))
    assert loaded.forget_indices.tolist() == [0, 1, 2]
    assert len(loaded.retain_indices) == 1434
    assert loaded.calibration_indices.tolist() == [5, 6]
    assert len(loaded.report_indices) == 358


def testatomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "split.json"
    target.write_text('{"old": true}')

    def torn(handle) -> None:
        handle.write(b'{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, torn)
    assert target.read_text() == '{"old": true}'
    assert listing(tmp_path) == ["split.json"]


@pytest.fixture()
def digits_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "split.json"
    write_manifest(path, DigitsDataModule().manifest)
    return path


def _edit(path: Path, **changes) -> None:
    """A manifest with other content, written by a program (its content hash recomputed): the
    checks below must refuse it on its content alone."""
    write_manifest(path, {**json.loads(path.read_text()), **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"forget_indices": [3, 5]},
        {"num_forget": 3},
        {"calibration_test_indices": [1, 2, 3]},
        {"request": {"kind": "classes", "classes": [2], "ratio": 0.1, "seed": 209}},
    ],
    ids=["ids", "num_forget", "calibration-half", "request"],
)
def test_a_hand_edited_manifest_is_refused_before_its_ids_are_used(
    digits_manifest: Path, changes
) -> None:
    manifest = json.loads(digits_manifest.read_text())
    digits_manifest.write_text(json.dumps({**manifest, **changes}))
    with pytest.raises(ValueError, match=r"split\.json' was changed after it was written"):
        DigitsDataModule(split_manifest=str(digits_manifest))


def test_manifest_of_other_data_is_refused(digits_manifest: Path) -> None:
    _edit(digits_manifest, fingerprint="0123456789abcdef")
    with pytest.raises(ValueError, match=r"fingerprint 0123456789abcdef.*Use the manifest"):
        DigitsDataModule(split_manifest=str(digits_manifest))


def test_manifest_of_another_dataset_is_refused(digits_manifest: Path) -> None:
    _edit(digits_manifest, dataset="mnist")
    with pytest.raises(ValueError, match="drawn from dataset 'mnist'"):
        DigitsDataModule(split_manifest=str(digits_manifest))


def test_manifest_drawn_for_another_request_is_refused(digits_manifest: Path) -> None:
    with pytest.raises(ValueError, match=r"was drawn for the request .*'ratio': 0\.1"):
        DigitsDataModule(split_manifest=str(digits_manifest), forget_ratio=0.2)
    with pytest.raises(ValueError, match="was drawn for the request"):
        DigitsDataModule(split_manifest=str(digits_manifest), seed=1)


def test_manifest_with_out_of_range_indices_is_refused(digits_manifest: Path) -> None:
    _edit(digits_manifest, forget_indices=[3, 5000])
    with pytest.raises(ValueError, match=r"\[5000\] are out of range"):
        DigitsDataModule(split_manifest=str(digits_manifest))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"calibration_test_indices": [1, 400]}, r"\[400\] are out of range; the test set has 360"),
        ({"calibration_test_indices": [1, 1, 2]}, r"\[1\] appear more than once"),
        ({"forget_indices": []}, "forgets 0 of 1437 training samples"),
        ({"forget_indices": list(range(1437))}, "forgets 1437 of 1437 training samples"),
    ],
    ids=["calibration-out-of-range", "calibration-duplicates", "forgets-none", "forgets-all"],
)
def test_manifest_with_an_unusable_split_is_refused(
    digits_manifest: Path, changes, message
) -> None:
    _edit(digits_manifest, **changes)
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(split_manifest=str(digits_manifest))


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, r"does not exist\. Train the original model first"),
        ('{"format": 1, "forget_indices": [1]}', ValueError, r"lacks \['dataset'"),
        ("{not json", ValueError, "is not valid JSON"),
        ('{"forget_indices": [1]}', ValueError, "is not a ps-lightning split manifest"),
    ],
    ids=["missing", "incomplete", "not-json", "not-a-manifest"],
)
def test_unreadable_manifest_is_refused(tmp_path: Path, content, error, message) -> None:
    path = tmp_path / "split.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=message):
        DigitsDataModule(split_manifest=str(path))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forget_classes": [10]}, r"unknown classes \[10\]"),
        ({"forget_classes": [1, 1]}, "names a class twice"),
        ({"forget_ratio": 0.0}, "is outside"),
        ({"forget_ratio": 1.5}, "is outside"),
        ({"forget": "random", "forget_ratio": 1.0}, "empty retain set"),
        ({"forget_classes": [1], "forget_ratio": 0.001}, "forget set is empty"),
        ({"train_on": "everything"}, "train_on='everything' is not one of"),
        ({"batch_size": 0}, "must be positive"),
    ],
)
def test_bad_datamodule_arguments_fail_and_write_nothing(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(data_dir=str(tmp_path), **kwargs)
    assert listing(tmp_path) == []


def test_bad_index_file_fails_in_the_datamodule(tmp_path: Path) -> None:
    file = tmp_path / "forget.txt"
    file.write_text("3\n3\n")
    with pytest.raises(ValueError, match="appear more than once"):
        DigitsDataModule(forget="indices", forget_indices_file=str(file))
    assert listing(tmp_path) == ["forget.txt"]


def test_index_file_request_forgets_exactly_the_listed_samples(tmp_path: Path) -> None:
    file = tmp_path / "forget.txt"
    file.write_text("17\n3\n150\n")
    dm = IndexedDataModule(forget="indices", forget_indices_file=str(file))
    assert dm.forget_indices.tolist() == [3, 17, 150]
    assert dm.request["kind"] == "indices" and dm.request["count"] == 3


def test_an_indices_request_is_identified_by_its_ids_not_its_file(tmp_path: Path) -> None:
    file = tmp_path / "forget.txt"
    file.write_text("17\n3\n150\n")
    manifest = tmp_path / "split.json"
    write_manifest(
        manifest, IndexedDataModule(forget="indices", forget_indices_file=str(file)).manifest
    )
    moved = tmp_path / "elsewhere.json"
    moved.write_text("[150, 3, 17]")  # the same ids, in another file and order: the same request
    reused = IndexedDataModule(
        forget="indices", forget_indices_file=str(moved), split_manifest=str(manifest)
    )
    assert reused.forget_indices.tolist() == [3, 17, 150]
    file.write_text("17\n3\n151\n")  # edited in place: another request, not the old split
    with pytest.raises(ValueError, match="was drawn for the request"):
        IndexedDataModule(
            forget="indices", forget_indices_file=str(file), split_manifest=str(manifest)
        )


def test_missing_dataset_files_without_download_fail_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MNIST not found at .*download: true"):
        MNISTDataModule(data_dir=str(tmp_path), download=False)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- loaders


def test_tensor_samples_cut_a_batch_by_one_indexing() -> None:
    images, labels = torch.arange(30).view(10, 3), torch.arange(10) * 2
    samples = TensorSamples(images, labels)
    assert len(samples) == 10
    batch_images, batch_labels = samples.__getitems__([7, 2, 2])
    assert torch.equal(batch_images, images[[7, 2, 2]])
    assert batch_labels.tolist() == [14, 4, 4]
    assert [t.tolist() for t in samples[4]] == [[12, 13, 14], 8]


@pytest.mark.parametrize(("train_on", "size"), [("full", 200), ("retain", 150), ("forget", 50)])
def test_train_loader_serves_the_train_on_split(train_on: str, size: int) -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.25, train_on=train_on, batch_size=32)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert [len(b[0]) for b in batches[:-1]] == [32] * (len(batches) - 1)
    seen = loader_indices(batches)
    expected = {
        "full": list(range(NUM_TRAIN)),
        "retain": dm.retain_indices.tolist(),
        "forget": dm.forget_indices.tolist(),
    }[train_on]
    assert len(seen) == size
    assert sorted(seen) == expected


def test_train_loader_shuffles_and_eval_loaders_do_not() -> None:
    torch.manual_seed(0)
    dm = IndexedDataModule(batch_size=64, eval_batch_size=64)
    assert loader_indices(dm.train_dataloader()) != list(range(NUM_TRAIN))
    assert loader_indices(dm.eval_dataloader("retain")) == dm.retain_indices.tolist()


def test_val_loaders_are_forget_retain_subset_and_test_in_order() -> None:
    dm = IndexedDataModule(forget_classes=[1], forget_ratio=0.4, retain_val_size=30)
    forget, retain_val, test = dm.val_dataloader()
    assert loader_indices(forget) == dm.forget_indices.tolist()
    retain_seen = loader_indices(retain_val)
    assert len(retain_seen) == 30
    assert set(retain_seen) <= set(dm.retain_indices.tolist())
    assert loader_indices(test, is_test=True) == dm.report_indices.tolist()
    # The retain subset is fixed: the same samples every epoch and in every process.
    again = IndexedDataModule(forget_classes=[1], forget_ratio=0.4, retain_val_size=30)
    assert loader_indices(again.val_dataloader()[1]) == retain_seen


@pytest.mark.parametrize("retain_val_size", [0, 10_000])
def test_retain_val_size_zero_or_too_large_validates_all_retain(retain_val_size: int) -> None:
    dm = IndexedDataModule(retain_val_size=retain_val_size)
    assert loader_indices(dm.val_dataloader()[1]) == dm.retain_indices.tolist()


def test_test_loaders_are_forget_retain_test_calibration_in_order() -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.1, eval_batch_size=16)
    loaders = dm.test_dataloader()
    assert len(loaders) == 4
    assert loader_indices(loaders[0]) == dm.forget_indices.tolist()
    assert loader_indices(loaders[1]) == dm.retain_indices.tolist()  # all of it, not a subset
    assert loader_indices(loaders[2], True) == dm.report_indices.tolist()
    assert loader_indices(loaders[3], True) == dm.calibration_indices.tolist()


def test_eval_loaders_shard_each_sample_exactly_once_across_ranks() -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.075, eval_batch_size=4)  # 15 samples
    shards = []
    for rank in range(2):
        dm.trainer = fake_trainer(world_size=2, global_rank=rank)
        shards.append(loader_indices(dm.eval_dataloader("forget")))
    assert sorted(shards[0] + shards[1]) == dm.forget_indices.tolist()  # no padding repeats


def test_after_transfer_normalises_uint8_with_the_dataset_statistics() -> None:
    dm = DigitsDataModule(eval_batch_size=8)
    dm.trainer = fake_trainer(training=False)
    batch = next(iter(dm.eval_dataloader("test")))
    images, labels = batch
    out_images, out_labels = dm.on_after_batch_transfer(batch, 0)
    assert out_images.dtype == torch.float32
    expected = (images.double() / 255.0 - 0.30) / 0.38
    torch.testing.assert_close(out_images.double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(out_labels, labels)


def test_after_transfer_augments_only_training_batches() -> None:
    dm = IndexedDataModule(batch_size=64)
    batch = next(iter(dm.eval_dataloader("retain")))
    images, labels = batch
    plain = (images.float() / 255.0 - 0.5) / 0.25

    # Also while training: an evaluation batch is never augmented.
    dm.trainer = fake_trainer(training=True)
    assert type(batch) is ImageBatch
    torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)[0], plain)

    assert type(next(iter(dm.train_dataloader()))) is AugmentedImageBatch
    torch.manual_seed(0)
    augmented, same_labels = dm.on_after_batch_transfer(AugmentedImageBatch(images, labels), 0)
    assert augmented.shape == plain.shape
    assert not torch.equal(augmented, plain)
    assert torch.equal(same_labels, labels)

    no_augment = IndexedDataModule(batch_size=64, augment=False)
    no_augment.trainer = fake_trainer(training=True)
    assert type(next(iter(no_augment.train_dataloader()))) is ImageBatch
    torch.testing.assert_close(no_augment.on_after_batch_transfer(batch, 0)[0], plain)


def test_after_transfer_passes_float_batches_through_untouched() -> None:
    dm = DigitsDataModule()
    dm.trainer = fake_trainer(training=True)
    features, targets = torch.randn(5, 64), torch.softmax(torch.randn(5, 10), 1)
    batch = (features, targets)
    out = dm.on_after_batch_transfer(batch, 0)
    assert out[0] is features and out[1] is targets


def fitting(dm: UnlearningDataModule, module: object, training: bool = True) -> None:
    dm.trainer = fake_trainer(training=training, lightning_module=module)


def test_a_loader_of_a_methods_own_rows_serves_them_in_one_seeded_order() -> None:
    dm = DigitsDataModule(batch_size=4)
    features = torch.arange(10 * 3, dtype=torch.float32).view(10, 3)
    targets = torch.arange(10)
    seed = dm.hparams.seed
    batches = list(same_order_loader(TensorSamples(features, targets), dm.hparams.batch_size, seed))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    rows = torch.cat([b[0] for b in batches])
    order = torch.cat([b[1] for b in batches])
    assert sorted(order.tolist()) == list(range(10))
    assert order.tolist() != list(range(10))  # shuffled
    assert torch.equal(rows, features[order])  # features stay paired with their targets
    # The order is seeded by the data's seed: the same batches in every run and process.
    again = same_order_loader(TensorSamples(features, targets), dm.hparams.batch_size, seed)
    assert torch.equal(torch.cat([b[1] for b in again]), order)
    # Not cut by the datamodule's loaders, so its after-transfer hook leaves them alone.
    fitting(dm, None)
    assert dm.on_after_batch_transfer(batches[0], 0) is batches[0]


@pytest.mark.parametrize(
    "tensors",
    [(torch.empty(0, 64), torch.empty(0)), (torch.zeros(5, 64), torch.zeros(4)), ()],
    ids=["empty", "unequal-lengths", "nothing"],
)
def test_unusable_rows_of_a_method_are_refused(tensors) -> None:
    with pytest.raises(ValueError, match=r"needs non-empty tensors of one length"):
        same_order_loader(TensorSamples(*tensors), 256, 209)


@pytest.mark.parametrize("module", [object(), None], ids=["plain-module", "no-trainer-module"])
def test_a_module_without_a_declaration_gets_the_configured_train_on(module: object) -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.25, train_on="forget", batch_size=8)
    fitting(dm, module)
    assert sorted(loader_indices(dm.train_dataloader())) == dm.forget_indices.tolist()
    assert dm.state_dict()["train_on"] == "forget"


def test_a_split_asked_for_is_served_and_the_data_stays_as_configured() -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.25, batch_size=8)
    fitting(dm, None)
    assert sorted(loader_indices(dm.train_loader("retain"))) == dm.retain_indices.tolist()
    # Checkpoints say what the datamodule was configured to serve; its setting is untouched.
    assert dm.state_dict()["train_on"] == "full"
    assert dm.hparams.train_on == "full"


def test_forget_then_retain_passes_use_the_part_batch_sizes_asked_for() -> None:
    dm = IndexedDataModule(forget="random", forget_ratio=0.25, batch_size=64)
    fitting(dm, None)
    loader = dm.train_loader("forget-then-retain", {"forget": 16})
    batches = [next(iter(batch.items())) for batch in loader]
    sizes = [(part, len(labels)) for part, (_, labels) in batches]
    # 50 forget samples in batches of 16, then 150 retain samples in the data's batches of 64.
    assert sizes == [("forget", 16)] * 3 + [("forget", 2)] + [("retain", 64)] * 2 + [("retain", 22)]
    forget = [i for part, (images, _) in batches if part == "forget" for i in decode(images)]
    assert sorted(forget) == dm.forget_indices.tolist()


@pytest.mark.parametrize(
    ("train_on", "batch_sizes", "message"),
    [
        ("everything", None, "train_on='everything' is not one of"),
        ("forget-then-retain", {"forget": 0}, r"batch sizes \{'forget': 0\}"),
    ],
    ids=["unknown-split", "zero-batch"],
)
def test_bad_loader_requests_are_refused(
    train_on: str, batch_sizes: dict[str, int] | None, message: str
) -> None:
    dm = IndexedDataModule()
    fitting(dm, None)
    with pytest.raises(ValueError, match=message):
        dm.train_loader(train_on, batch_sizes)


@pytest.mark.parametrize(("data_augment", "loader_augment"), [(True, False), (False, True)])
def test_a_loader_that_chooses_augmentation_overrides_the_data(
    data_augment: bool, loader_augment: bool
) -> None:
    dm = IndexedDataModule(batch_size=64, augment=data_augment)
    fitting(dm, None)
    torch.manual_seed(0)
    batch = next(iter(dm.train_loader("retain", augment=loader_augment)))
    plain = (batch.images.float() / 255.0 - 0.5) / 0.25
    out = dm.on_after_batch_transfer(batch, 0)[0]
    assert torch.equal(out, plain) is not loader_augment
    assert dm.hparams.augment is data_augment  # never written by the loader's caller


def test_atomic_writes_get_the_permissions_of_an_ordinary_write(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "file.json", lambda handle: handle.write(b"{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "file.json").stat().st_mode & 0o777 == 0o644


def test_fingerprint_covers_pixels_order_and_input_transform() -> None:
    source = DigitsDataModule()._source
    images, labels = source.train_images, source.train_labels
    transform = {"mean": [0.30], "std": [0.38]}
    reference = fingerprint(images, labels, transform)
    assert fingerprint(images.clone(), labels.clone(), dict(transform)) == reference
    shifted = torch.roll(images, shifts=3, dims=-1)
    assert fingerprint(shifted, labels, transform) != reference
    # Two samples of the same class swapped: the label sequence is unchanged.
    same_class = torch.nonzero(labels == labels[0]).flatten()[:2]
    swapped = images.clone()
    swapped[same_class] = images[same_class.flip(0)]
    assert fingerprint(swapped, labels, transform) != reference
    assert fingerprint(images, labels, {"mean": [0.5], "std": [0.38]}) != reference
