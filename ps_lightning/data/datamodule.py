"""UnlearningDataModule: one training set, one forget request, named forget/retain/test splits.

Images stay in memory as uint8 tensors; batches are cut by tensor indexing and normalised (and,
for training, augmented) on the device after transfer, so no per-sample Python transform runs.
The datamodule serves data and knows no method: a method that trains on other data than the
configured ``train_on`` builds its own loader from what it offers (`samples`, `train_loader`,
`eval_dataloader`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader

from ps_lightning.data import augment
from ps_lightning.data.loaders import (
    TrainOn,
    eval_loader,
    train_parts,
    training_loader,
)
from ps_lightning.data.manifest import (
    build_manifest,
    fingerprint,
    manifest_header,
    read_split,
    request_manifest,
    write_run_manifest,
)
from ps_lightning.data.requests import (
    RequestKind,
    covers_whole_classes,
    draw_forget_indices,
    emptied_classes,
    request_record,
    sample_ids,
    split_rows,
    split_test_set,
    targets_few_classes,
    validate_request,
)
from ps_lightning.data.samplers import AugmentedImageBatch, ImageBatch, TensorSamples
from ps_lightning.data.sources import Source
from ps_lightning.splits import EVAL_SPLITS


def on_device(source: Source | None, device: torch.device) -> Source:
    """``source`` with its images and labels on ``device`` (the same tensors if there)."""
    assert source is not None
    return Source(*(t.to(device) for t in source[:4]), source.classes)


class UnlearningDataModule(L.LightningDataModule):
    """Base of every dataset: the forget request, the split manifest and the loaders.

    Args:
        data_dir: where the dataset files are (or are downloaded to).
        download: fetch the dataset when its files are missing.
        forget: request kind: ``classes`` (a fraction of some classes; ratio 1.0 = whole
            classes), ``random`` (a fraction of the whole training set), ``indices`` (a file).
        forget_classes: the classes a ``classes`` request draws from (the paper: class 1).
        forget_ratio: the fraction to forget, in (0, 1] (the paper: 0.1).
        forget_indices_file: JSON list or one index per line, for ``indices``.
        seed: seeds the request and the calibration/report halves of the test set.
        split_manifest: load this manifest instead of drawing (later runs reuse the original
            run's ``split.json``); refused if it was drawn from other data or another request.
        train_on: what the training loader serves: ``full`` (the original model), ``retain``
            (the retrained gold standard), ``forget``, ``forget+retain`` (both, one batch of
            each per step) or ``forget-then-retain`` (a pass over the forget set, then one over
            the retain set, per epoch). The unlearning methods build their own training loader.
        augment: apply the dataset's train augmentation (random crop, flip) on the device.
        batch_size: training batch size.
        eval_batch_size: batch size of the validation, test and feature-extraction loaders.
        retain_val_size: size of the fixed random retain subset validated each epoch (0: all).
        num_workers: DataLoader workers; the data are in memory, so 0 is usually fastest.
        data_on_device: keep the stored images on the accelerator (moved once when the Trainer
            sets the datamodule up), so that batches are cut there and no batch crosses the
            host-device link; the augmentation already runs on the device (`model_input`).
            For a GPU whose memory holds the dataset (CIFAR-10: 150 MB, TinyImageNet: 1.3 GB).
    """

    dataset_name: ClassVar[str]
    num_classes: ClassVar[int]
    in_channels: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    crop_padding: ClassVar[int] = 0
    horizontal_flip: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        forget: RequestKind = "classes",
        forget_classes: list[int] | None = None,
        forget_ratio: float = 0.1,
        forget_indices_file: str | None = None,
        seed: int = 209,
        split_manifest: str | None = None,
        train_on: TrainOn = "full",
        augment: bool = True,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        retain_val_size: int = 2000,
        num_workers: int = 0,
        data_on_device: bool = False,
    ) -> None:
        super().__init__()
        if data_on_device and num_workers:
            raise ValueError(
                f"data_on_device keeps the images on the accelerator, where DataLoader workers "
                f"cannot cut batches: set num_workers 0 (not {num_workers})."
            )
        forget_classes = [1] if forget_classes is None else list(forget_classes)
        validate_request(
            forget, forget_classes, forget_ratio, self.num_classes, forget_indices_file
        )
        train_parts(train_on)  # refuses an unknown train_on before anything runs
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be positive.")
        self.save_hyperparameters()
        self.forget_classes = forget_classes
        self.request = request_record(
            forget, forget_classes, forget_ratio, seed, forget_indices_file
        )
        self._source: Source | None = None
        self.manifest: dict[str, Any] | None = None
        if not download:
            # The files must be here already: load now, so that a missing file or a bad request
            # is reported before the Trainer creates any run directory.
            self._load()

    # ---------------------------------------------------------------- dataset-specific
    def load_source(self) -> Source:
        raise NotImplementedError

    def download_source(self) -> None:
        """Fetch the files (called on one process only); the default loads with download on."""
        self.load_source()

    def input_transform(self) -> dict[str, Any]:
        """What turns stored images into model inputs (part of the training-set fingerprint)."""
        return {"mean": list(self.mean), "std": list(self.std)}

    # ---------------------------------------------------------------- the split
    def _load(self) -> None:
        if self._source is not None:
            return
        source = self.load_source()
        self._source = source
        header = manifest_header(
            self.dataset_name,
            fingerprint(source.train_images, source.train_labels, self.input_transform()),
            len(source.train_labels),
            len(source.test_labels),
            self.num_classes,
            self.request,
        )
        if self.hparams.split_manifest:
            self._use_manifest(read_split(self.hparams.split_manifest, header))
            return
        forget = draw_forget_indices(
            source.train_labels,
            self.hparams.forget,
            self.forget_classes,
            self.hparams.forget_ratio,
            self.hparams.seed,
            self.hparams.forget_indices_file,
        )
        calibration, _ = split_test_set(len(source.test_labels), self.hparams.seed)
        self._use_manifest(build_manifest(header, forget, calibration))

    def _use_manifest(self, manifest: dict[str, Any]) -> None:
        source = self._source
        assert source is not None
        self.manifest = manifest
        self.forget_indices, self.retain_indices = split_rows(
            manifest["forget_indices"], len(source.train_labels)
        )
        self.calibration_indices, self.report_indices = split_rows(
            manifest["calibration_test_indices"], len(source.test_labels)
        )

    @property
    def train_fingerprint(self) -> str:
        self._load()
        assert self.manifest is not None
        return self.manifest["fingerprint"]

    def prepare_data(self) -> None:
        if self.hparams.download:
            self.download_source()

    def setup(self, stage: str) -> None:
        self._load()
        trainer = self.trainer
        if trainer is None:
            return
        if self.hparams.data_on_device:
            self._source = on_device(self._source, trainer.strategy.root_device)
        log_dir = trainer.log_dir  # a broadcast: every rank must ask, not only rank 0
        if trainer.is_global_zero and log_dir:
            assert self.manifest is not None
            write_run_manifest(log_dir, self.manifest)

    def with_forget_set(
        self, forget_indices: Sequence[int], request: dict[str, Any]
    ) -> UnlearningDataModule:
        """A copy of this datamodule that forgets ``forget_indices`` instead, sharing its loaded
        data and its calibration half of the test set; ``request`` is what its split manifest
        records. The Python API's requests name their samples in memory, not in a file."""
        self._load()
        assert self.manifest is not None
        ids = sorted(sample_ids(forget_indices, "forget_indices"))
        request_data = copy.copy(self)
        request_data._use_manifest(request_manifest(self.manifest, ids, request))
        return request_data

    def state_dict(self) -> dict[str, Any]:
        # Saved in every checkpoint, so a model always says which samples it was trained on.
        assert self.manifest is not None
        return {"split_manifest": self.manifest, "train_on": self.hparams.train_on}

    # ---------------------------------------------------------------- samples
    def samples(self, split: str) -> TensorSamples:
        """Images and labels of a split: train, forget, retain, retain_val, test, calibration."""
        self._load()
        source = self._source
        assert source is not None
        if split in ("test", "calibration"):
            rows = self.report_indices if split == "test" else self.calibration_indices
            return TensorSamples(source.test_images[rows], source.test_labels[rows])
        if split in ("train", "full"):
            # The tensors themselves: indexing with all N rows would copy the whole set.
            return TensorSamples(source.train_images, source.train_labels)
        rows = self.train_indices(split)
        return TensorSamples(source.train_images[rows], source.train_labels[rows])

    def train_indices(self, split: str) -> torch.Tensor:
        """The training-set rows of a split cut from it: forget, retain, retain_val."""
        self._load()
        if split == "retain_val":
            return self._retain_val_indices()
        rows = {"forget": self.forget_indices, "retain": self.retain_indices}.get(split)
        if rows is None:
            raise KeyError(f"unknown split {split!r}")
        return rows

    def train_subset(self, indices: torch.Tensor) -> TensorSamples:
        """Training samples by index (e.g. the not yet removed part of a cumulative request)."""
        self._load()
        assert self._source is not None
        return TensorSamples(self._source.train_images[indices], self._source.train_labels[indices])

    def emptied_classes(self, also_removed: list[int] | None = None) -> list[int]:
        """The classes with no training sample left once this request's forget set and the
        samples ``also_removed`` (earlier cumulative requests) are removed."""
        self._load()
        assert self._source is not None
        removed = self.forget_indices
        if also_removed:
            removed = torch.cat([removed, torch.tensor(also_removed, dtype=torch.long)]).unique()
        return emptied_classes(self._source.train_labels, removed)

    @property
    def forgets_whole_classes(self) -> bool:
        """Whether the forget set is exactly a union of whole classes."""
        self._load()
        assert self._source is not None
        return covers_whole_classes(self._source.train_labels, self.forget_indices)

    @property
    def targets_few_classes(self) -> bool:
        """Whether the forget set lies within at most half of the classes (`requests`)."""
        self._load()
        assert self._source is not None
        forget_labels = self._source.train_labels[self.forget_indices]
        return targets_few_classes(forget_labels, self.num_classes)

    def _retain_val_indices(self) -> torch.Tensor:
        size = self.hparams.retain_val_size
        if size <= 0 or size >= len(self.retain_indices):
            return self.retain_indices
        generator = torch.Generator().manual_seed(self.hparams.seed + 2)
        pick = torch.randperm(len(self.retain_indices), generator=generator)[:size]
        return self.retain_indices[torch.sort(pick).values]

    # ---------------------------------------------------------------- loaders
    def _shard(self) -> tuple[int, int]:
        """This process's place among the trainer's: (world size, global rank)."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def eval_dataloader(
        self, split: str | TensorSamples, batch_size: int | None = None
    ) -> DataLoader:
        """An unshuffled loader over a named split (each sample once, also under DDP), in
        batches of ``eval_batch_size`` unless ``batch_size`` is given."""
        samples = self.samples(split) if isinstance(split, str) else split
        size = batch_size or self.hparams.eval_batch_size
        return eval_loader(samples, size, *self._shard(), self.hparams.num_workers)

    def train_loader(
        self,
        train_on: str,
        batch_sizes: dict[str, int] | None = None,
        augment: bool | None = None,
    ) -> DataLoader | dict[str, DataLoader]:
        """A shuffled training loader over ``train_on`` (one of ``TRAIN_ON``), in batches of
        ``batch_sizes[part]`` for each of its parts (default: ``batch_size``), augmented as
        ``augment`` says (default: the ``augment`` setting)."""
        asked = batch_sizes or {}
        if any(size < 1 for size in asked.values()):
            raise ValueError(f"batch sizes {asked}: every batch size must be positive.")
        parts = {p: self.samples(p) for p in train_parts(train_on)}
        sizes = {p: asked.get(p, self.hparams.batch_size) for p in parts}
        augment_batch = self.hparams.augment if augment is None else augment
        seed, workers = self.hparams.seed, self.hparams.num_workers
        return training_loader(train_on, parts, sizes, augment_batch, seed, *self._shard(), workers)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        return self.train_loader(self.hparams.train_on)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader(s) for s in ("forget", "retain_val", "test")]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader(s) for s in EVAL_SPLITS]

    def model_input(self, images: torch.Tensor, augment_batch: bool = False) -> torch.Tensor:
        """uint8 images on the device → the normalised float batch a model takes, with the
        dataset's train augmentation when ``augment_batch``."""
        if augment_batch:
            if self.crop_padding:
                images = augment.random_crop(images, self.crop_padding)
            if self.horizontal_flip:
                images = augment.random_hflip(images)
        return augment.normalize(images, self.mean, self.std)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict):  # forget+retain and forget-then-retain: each part alone
            return {k: self.on_after_batch_transfer(v, dataloader_idx) for k, v in batch.items()}
        if not isinstance(batch, ImageBatch):
            return batch  # not cut by a loader of this datamodule: not its to transform
        augment_batch = isinstance(batch, AugmentedImageBatch)
        return (self.model_input(batch.images, augment_batch=augment_batch), batch.labels)
