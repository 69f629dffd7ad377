"""UnlearningDataModule: one training set, one forget request, named forget/retain/test splits.

Images stay in memory as uint8 tensors; batches are cut by tensor indexing and normalised (and,
for training, augmented) on the device after transfer, so no per-sample Python transform runs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ps_lightning.data import augment
from ps_lightning.data.manifest import (
    build_manifest,
    check_manifest,
    fingerprint,
    read_manifest,
    with_forget_indices,
    write_manifest,
)
from ps_lightning.data.requests import (
    RequestKind,
    check_indices,
    draw_forget_indices,
    indices_request,
    read_indices_file,
    split_test_set,
    validate_request,
)
from ps_lightning.data.sources import Source
from ps_lightning.splits import EVAL_SPLITS

TrainOn = Literal["full", "retain", "forget", "forget+retain", "forget-then-retain"]
TRAIN_ON: tuple[str, ...] = get_args(TrainOn)
# `forget+retain`: the train loader is `{"forget": loader, "retain": loader}`; Lightning combines
# them (mode max_size_cycle: the shorter one cycles) and each step gets a dict of both batches.
PAIRED = {"forget+retain": ("forget", "retain")}
# `forget-then-retain`: one pass over the forget set, then one over the retain set, every epoch (the
# loop of the RL, SalUn and SCRUB reference code). Lightning's fit loop refuses a sequential
# CombinedLoader, so one loader serves the passes in order, one part per batch.
SEQUENTIAL = {"forget-then-retain": ("forget", "retain")}
MANIFEST_NAME = "split.json"


@runtime_checkable
class TrainsOnSplits(Protocol):
    """A LightningModule that names the split it trains on (one of ``TRAIN_ON``), and for
    ``forget-then-retain`` a batch size per part (None: the datamodule's ``batch_size``). The
    datamodule serves it; the module never writes into the datamodule."""

    train_on: str

    def part_batch_sizes(self) -> dict[str, int] | None: ...


@runtime_checkable
class TrainsOnTensors(Protocol):
    """A LightningModule that trains on tensors of its own (e.g. cached features and soft
    targets), not on images: rows of equally long tensors, or None while it has none (then the
    datamodule's ``train_on`` applies)."""

    def train_tensors(self) -> tuple[torch.Tensor, ...] | None: ...


@runtime_checkable
class ChoosesAugmentation(Protocol):
    """A LightningModule that decides whether its training images are augmented (SCRUB's
    reference trains without), whatever the datamodule's ``augment``."""

    augment_training: bool


class TensorSamples(Dataset):
    """Rows of equally long tensors; a whole batch is one indexing operation."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[rows] for t in self.tensors)


def _already_batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


class PartSamples(Dataset):
    """Named splits whose item is a whole batch of one split: ``(name, rows)`` →
    ``{name: (images, labels)}``, the shape `on_after_batch_transfer` already handles."""

    def __init__(self, parts: dict[str, TensorSamples]) -> None:
        self.parts = parts

    def __getitem__(self, item: tuple[str, list[int]]) -> dict[str, tuple[torch.Tensor, ...]]:
        name, rows = item
        return {name: self.parts[name].__getitems__(rows)}


class SequentialPartsSampler(DistributedSampler):
    """Per epoch, the batches of each part in turn: every sample of a part once, shuffled
    within the part, in batches of that part's size; a batch never mixes parts.

    A `DistributedSampler` so that Lightning neither replaces it under DDP nor forgets to call
    `set_epoch`; it shards each part itself like `DistributedSampler` (padding a part by
    repeating samples to a multiple of the process count, so every process takes as many
    steps), and every process shuffles with the same seed and epoch.
    """

    def __init__(
        self,
        part_sizes: dict[str, int],
        batch_sizes: dict[str, int],
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.part_sizes = part_sizes
        self.batch_sizes = batch_sizes
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.shuffle = True
        self.drop_last = False

    def _shard_size(self, part: str) -> int:
        return -(-self.part_sizes[part] // self.num_replicas)

    def __len__(self) -> int:
        return sum(-(-self._shard_size(p) // self.batch_sizes[p]) for p in self.part_sizes)

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        for part, size in self.part_sizes.items():
            order = torch.randperm(size, generator=generator)
            padded = self._shard_size(part) * self.num_replicas
            order = torch.cat([order, order[: padded - size]])[self.rank :: self.num_replicas]
            for batch in order.split(self.batch_sizes[part]):
                yield part, batch.tolist()


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
        train_on: ``full`` (the original model), ``retain`` (the retrained gold standard),
            ``forget``, ``forget+retain`` (both, one batch of each per step) or
            ``forget-then-retain`` (a pass over the forget set, then one over the retain set, per
            epoch). The fitted module may declare its own training data instead
            (`TrainsOnSplits`, `TrainsOnTensors`): the unlearning methods do.
        augment: apply the dataset's train augmentation (random crop, flip) on the device.
        batch_size: training batch size.
        eval_batch_size: batch size of the validation, test and feature-extraction loaders.
        retain_val_size: size of the fixed random retain subset validated each epoch (0: all).
        num_workers: DataLoader workers; the data are in memory, so 0 is usually fastest.
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
    ) -> None:
        super().__init__()
        forget_classes = [1] if forget_classes is None else list(forget_classes)
        validate_request(
            forget, forget_classes, forget_ratio, self.num_classes, forget_indices_file
        )
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on={train_on!r} is not one of {TRAIN_ON}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be positive.")
        self.save_hyperparameters()
        self.forget_classes = forget_classes
        self.request = self.request_record(
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
    @staticmethod
    def request_record(
        kind: str, classes: list[int], ratio: float, seed: int, indices_file: str | None
    ) -> dict[str, Any]:
        if kind == "indices":
            # Identified by content: an edited file is another request, a moved one is not.
            return indices_request(read_indices_file(str(indices_file)))
        record: dict[str, Any] = {"kind": kind, "ratio": float(ratio), "seed": int(seed)}
        if kind == "classes":
            record["classes"] = sorted(int(c) for c in classes)
        return record

    def _load(self) -> None:
        if self._source is not None:
            return
        source = self.load_source()
        self._source = source
        train_fingerprint = fingerprint(
            source.train_images, source.train_labels, self.input_transform()
        )
        if self.hparams.split_manifest:
            where = f"split manifest '{self.hparams.split_manifest}'"
            manifest = read_manifest(self.hparams.split_manifest)
            check_manifest(manifest, self.dataset_name, train_fingerprint, where)
            if manifest["request"] != self.request:
                raise ValueError(
                    f"{where} was drawn for the request {manifest['request']}, but this run asks "
                    f"for {self.request}. Make the data.forget* settings match the manifest, or "
                    "drop data.split_manifest to draw a new split."
                )
            num_train, num_test = len(source.train_labels), len(source.test_labels)
            check_indices(manifest["forget_indices"], num_train, where)
            if not 0 < len(manifest["forget_indices"]) < num_train:
                raise ValueError(
                    f"{where} forgets {len(manifest['forget_indices'])} of {num_train} training "
                    "samples: a split needs a non-empty forget set and a non-empty retain set."
                )
            check_indices(
                manifest["calibration_test_indices"],
                num_test,
                f"{where} (calibration_test_indices)",
                what="test set",
            )
        else:
            forget = draw_forget_indices(
                source.train_labels,
                self.hparams.forget,
                self.forget_classes,
                self.hparams.forget_ratio,
                self.hparams.seed,
                self.hparams.forget_indices_file,
            )
            calibration, _ = split_test_set(len(source.test_labels), self.hparams.seed)
            manifest = build_manifest(
                self.dataset_name,
                train_fingerprint,
                len(source.train_labels),
                len(source.test_labels),
                self.num_classes,
                self.request,
                forget,
                calibration,
            )
        self._use_manifest(manifest)

    def _use_manifest(self, manifest: dict[str, Any]) -> None:
        source = self._source
        assert source is not None
        self.manifest = manifest
        num_train = len(source.train_labels)
        is_forget = torch.zeros(num_train, dtype=torch.bool)
        is_forget[manifest["forget_indices"]] = True
        self.forget_indices = torch.nonzero(is_forget).flatten()
        self.retain_indices = torch.nonzero(~is_forget).flatten()
        is_calibration = torch.zeros(len(source.test_labels), dtype=torch.bool)
        is_calibration[manifest["calibration_test_indices"]] = True
        self.calibration_indices = torch.nonzero(is_calibration).flatten()
        self.report_indices = torch.nonzero(~is_calibration).flatten()

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
        log_dir = trainer.log_dir  # a broadcast: every rank must ask, not only rank 0
        if trainer.is_global_zero and log_dir:
            target = Path(log_dir) / MANIFEST_NAME
            if not target.exists():
                write_manifest(target, self.manifest)
            elif json.loads(target.read_text() or "null") != self.manifest:
                # Checked before any write: a rerun into a finished run's folder keeps its split.
                raise FileExistsError(
                    f"'{target}' holds another split than this run's: the run folder belongs "
                    "to another run. Choose another run (--run NAME) or trainer.logger "
                    "save_dir; resume an interrupted run with its own settings and "
                    "--ckpt_path last."
                )

    def with_forget_set(
        self, forget_indices: Sequence[int], request: dict[str, Any]
    ) -> UnlearningDataModule:
        """A copy of this datamodule that forgets ``forget_indices`` instead, sharing its loaded
        data and its calibration half of the test set; ``request`` is what its split manifest
        records. The Python API's requests name their samples in memory, not in a file."""
        self._load()
        assert self.manifest is not None and self._source is not None
        ids = sorted(int(i) for i in forget_indices)
        num_train = len(self._source.train_labels)
        check_indices(ids, num_train, "the forget request")
        if not 0 < len(ids) < num_train:
            raise ValueError(
                f"the forget request names {len(ids)} of {num_train} training samples: a split "
                "needs a non-empty forget set and a non-empty retain set."
            )
        request_data = copy.copy(self)
        request_data._use_manifest(with_forget_indices(self.manifest, ids, request))
        return request_data

    def record_cumulative_removal(self, removed_indices: list[int]) -> None:
        """This run's result removes ``removed_indices`` (every cumulative request so far): its
        manifest, in split.json and in the result checkpoint, lists them all."""
        assert self.manifest is not None
        request = {"kind": "cumulative", "last_request": self.manifest["request"]}
        self.manifest = with_forget_indices(self.manifest, removed_indices, request)
        trainer = self.trainer
        log_dir = trainer.log_dir if trainer is not None else None  # a broadcast: every rank asks
        if trainer is not None and trainer.is_global_zero and log_dir:
            write_manifest(Path(log_dir) / MANIFEST_NAME, self.manifest)

    def state_dict(self) -> dict[str, Any]:
        # Saved in every checkpoint, so a model always says which samples it was trained on.
        assert self.manifest is not None
        return {"split_manifest": self.manifest, "train_on": self.served_train_on()}

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

    @property
    def forgets_whole_classes(self) -> bool:
        """Whether the forget set is exactly a union of whole classes."""
        self._load()
        assert self._source is not None
        labels = self._source.train_labels
        forget_labels = labels[self.forget_indices]
        classes = forget_labels.unique()
        return bool((labels[:, None] == classes).any(1).sum() == len(forget_labels))

    def _retain_val_indices(self) -> torch.Tensor:
        size = self.hparams.retain_val_size
        if size <= 0 or size >= len(self.retain_indices):
            return self.retain_indices
        generator = torch.Generator().manual_seed(self.hparams.seed + 2)
        pick = torch.randperm(len(self.retain_indices), generator=generator)[:size]
        return self.retain_indices[torch.sort(pick).values]

    # ---------------------------------------------------------------- loaders
    def _loader(self, samples: TensorSamples, shuffle: bool, batch_size: int) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Evaluation must see each sample exactly once: padded shards would count some twice.
            sampler = UnrepeatedDistributedSampler(
                samples, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            samples,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            collate_fn=_already_batched,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def eval_dataloader(
        self, split: str | TensorSamples, batch_size: int | None = None
    ) -> DataLoader:
        """An unshuffled loader over a named split (each sample once, also under DDP), in
        batches of ``eval_batch_size`` unless ``batch_size`` is given."""
        samples = self.samples(split) if isinstance(split, str) else split
        return self._loader(samples, False, batch_size or self.hparams.eval_batch_size)

    def _fitted_module(self) -> Any:
        trainer = self.trainer
        return getattr(trainer, "lightning_module", None) if trainer is not None else None

    def served_train_on(self) -> str:
        """The split the training loader serves: the fitted module's declaration, else the
        configured ``train_on``."""
        module = self._fitted_module()
        if not isinstance(module, TrainsOnSplits):
            return self.hparams.train_on
        if module.train_on not in TRAIN_ON:
            raise ValueError(
                f"{type(module).__name__} declares train_on={module.train_on!r}, which is not "
                f"one of {TRAIN_ON}."
            )
        return module.train_on

    def _part_batch_sizes(self, parts: tuple[str, ...]) -> dict[str, int]:
        module = self._fitted_module()
        declared = module.part_batch_sizes() if isinstance(module, TrainsOnSplits) else None
        sizes = dict(declared or {})
        if any(size < 1 for size in sizes.values()):
            raise ValueError(
                f"{type(module).__name__} declares part_batch_sizes {sizes}: every batch size "
                "must be positive."
            )
        return {p: sizes.get(p, self.hparams.batch_size) for p in parts}

    def _declared_tensors(self) -> TensorSamples | None:
        module = self._fitted_module()
        if not isinstance(module, TrainsOnTensors):
            return None
        tensors = module.train_tensors()
        if tensors is None:
            return None
        lengths = {len(t) for t in tensors}
        if not tensors or lengths == {0} or len(lengths) != 1:
            raise ValueError(
                f"{type(module).__name__}.train_tensors() must return non-empty tensors of one "
                f"length, got lengths {[len(t) for t in tensors]}."
            )
        return TensorSamples(*tensors)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        tensors = self._declared_tensors()
        if tensors is not None:
            # Every process trains on all the module's rows in the same seeded order (a
            # one-replica DistributedSampler, which Lightning leaves in place and re-seeds per
            # epoch): DDP then averages identical gradients, exactly one process's step, with no
            # padded repeats of a small forget set.
            sampler = DistributedSampler(
                tensors, num_replicas=1, rank=0, shuffle=True, seed=self.hparams.seed
            )
            return DataLoader(
                tensors,
                batch_size=self.hparams.batch_size,
                sampler=sampler,
                collate_fn=_already_batched,
            )
        train_on = self.served_train_on()
        sequence = SEQUENTIAL.get(train_on)
        if sequence is not None:
            return self._sequential_loader(sequence)
        parts = PAIRED.get(train_on)
        if parts is not None:
            return {p: self._loader(self.samples(p), True, self.hparams.batch_size) for p in parts}
        return self._loader(self.samples(train_on), True, self.hparams.batch_size)

    def _sequential_loader(self, parts: tuple[str, ...]) -> DataLoader:
        samples = {p: self.samples(p) for p in parts}
        trainer = self.trainer
        sampler = SequentialPartsSampler(
            {p: len(s) for p, s in samples.items()},
            self._part_batch_sizes(parts),
            seed=self.hparams.seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
        )
        # batch_size None: each item the sampler yields is already a whole batch.
        return DataLoader(
            PartSamples(samples),
            sampler=sampler,
            batch_size=None,
            collate_fn=_already_batched,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader(s) for s in ("forget", "retain_val", "test")]

    def test_dataloader(self) -> list[DataLoader]:
        return [self.eval_dataloader(s) for s in EVAL_SPLITS]

    def augments_training(self) -> bool:
        """Whether training batches are augmented: the fitted module's choice, else
        ``augment``."""
        module = self._fitted_module()
        if isinstance(module, ChoosesAugmentation):
            return bool(module.augment_training)
        return self.hparams.augment

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
        if isinstance(batch, dict):  # train_on: forget+retain — each part on its own
            return {k: self.on_after_batch_transfer(v, dataloader_idx) for k, v in batch.items()}
        images, *rest = batch
        if images.dtype != torch.uint8:
            return batch  # served tensors (cached features) pass through untouched
        trainer = self.trainer
        training = trainer is not None and trainer.training
        augment_batch = training and self.augments_training()
        return (self.model_input(images, augment_batch=augment_batch), *rest)
