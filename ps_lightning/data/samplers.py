"""Batches cut from in-memory tensors: the datasets, the sampler of sequential passes and the
batch types that the loaders of `ps_lightning.data.loaders` are made of.

A dataset here hands out a whole batch per indexing operation (`__getitems__`), so no
per-sample Python code runs; the collate functions only label what was cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, DistributedSampler


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
        # index_select: on a CPU three times as fast as indexing with a tensor (a batch of 1,024
        # rows of 400 floats: 0.19 ms against 0.62 ms).
        return tuple(t.index_select(0, rows.to(t.device)) for t in self.tensors)


class PartSamples(Dataset):
    """Named splits whose item is a whole batch of one split: ``(name, rows)`` →
    ``{name: (images, labels)}``."""

    def __init__(self, parts: dict[str, TensorSamples]) -> None:
        self.parts = parts

    def __getitem__(self, item: tuple[str, list[int]]) -> dict[str, tuple[torch.Tensor, ...]]:
        name, rows = item
        return {name: self.parts[name].__getitems__(rows)}


class ImageBatch(NamedTuple):
    """Stored uint8 images and their labels, as the datamodule's loaders serve them: its
    `on_after_batch_transfer` turns them into model input on the device. A batch of any other
    type is not the datamodule's to transform."""

    images: torch.Tensor
    labels: torch.Tensor


class AugmentedImageBatch(ImageBatch):
    """An `ImageBatch` of a training loader that augments: the dataset's train augmentation
    runs on the device before the normalisation."""

    __slots__ = ()


def image_batch(rows: tuple[torch.Tensor, ...], augment: bool = False) -> ImageBatch:
    """The collate function of an image loader over `TensorSamples`: the cut rows, labelled."""
    return AugmentedImageBatch(*rows) if augment else ImageBatch(*rows)


def image_part_batch(
    part: dict[str, tuple[torch.Tensor, ...]], augment: bool = False
) -> dict[str, ImageBatch]:
    """The collate function of an image loader over `PartSamples`: each part's rows, labelled."""
    return {name: image_batch(rows, augment) for name, rows in part.items()}


def already_batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function of a loader over rows a method made: the cut rows as they are."""
    return batch


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
