"""The DataLoaders over in-memory tensors: the datamodule's evaluation loaders, its training
loader of each ``train_on``, and the loader a method builds over rows of its own.

Every loader cuts whole batches (`ps_lightning.data.samplers`); those over stored images yield
`ImageBatch` tuples, which the datamodule turns into model input on the device.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from ps_lightning.data.samplers import (
    PartSamples,
    SequentialPartsSampler,
    TensorSamples,
    already_batched,
    image_batch,
    image_part_batch,
)

TrainOn = Literal["full", "retain", "forget", "forget+retain", "forget-then-retain"]
TRAIN_ON: tuple[str, ...] = get_args(TrainOn)
# `forget+retain`: the train loader is `{"forget": loader, "retain": loader}`; Lightning combines
# them (mode max_size_cycle: the shorter one cycles) and each step gets a dict of both batches.
PAIRED = {"forget+retain": ("forget", "retain")}
# `forget-then-retain`: one pass over the forget set, then one over the retain set, every epoch (the
# loop of the RL, SalUn and SCRUB reference code). Lightning's fit loop refuses a sequential
# CombinedLoader, so one loader serves the passes in order, one part per batch.
SEQUENTIAL = {"forget-then-retain": ("forget", "retain")}


def eval_loader(
    samples: TensorSamples, batch_size: int, world_size: int, rank: int, num_workers: int
) -> DataLoader:
    """Unshuffled image batches, each sample exactly once across the ``world_size`` processes."""
    sampler = None
    if world_size > 1:
        # Evaluation must see each sample exactly once: padded shards would count some twice.
        sampler = UnrepeatedDistributedSampler(
            samples, num_replicas=world_size, rank=rank, shuffle=False
        )
    return DataLoader(
        samples,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        collate_fn=image_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def shuffled_loader(
    samples: TensorSamples, batch_size: int, augment: bool, num_workers: int
) -> DataLoader:
    """Shuffled image batches (Lightning shards them under DDP), augmented when ``augment``."""
    return DataLoader(
        samples,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=functools.partial(image_batch, augment=augment),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def sequential_loader(
    parts: dict[str, TensorSamples],
    batch_sizes: dict[str, int],
    seed: int,
    augment: bool,
    world_size: int,
    rank: int,
    num_workers: int,
) -> DataLoader:
    """A pass over each part in turn per epoch, one part per batch (`SequentialPartsSampler`):
    each batch is ``{part: ImageBatch}``."""
    sampler = SequentialPartsSampler(
        {p: len(s) for p, s in parts.items()},
        batch_sizes,
        seed=seed,
        num_replicas=world_size,
        rank=rank,
    )
    # batch_size None: each item the sampler yields is already a whole batch.
    return DataLoader(
        PartSamples(parts),
        sampler=sampler,
        batch_size=None,
        collate_fn=functools.partial(image_part_batch, augment=augment),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def train_parts(train_on: str) -> tuple[str, ...]:
    """The splits that the training loader of ``train_on`` passes over."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on={train_on!r} is not one of {TRAIN_ON}.")
    return SEQUENTIAL.get(train_on) or PAIRED.get(train_on) or (train_on,)


def training_loader(
    train_on: str,
    parts: dict[str, TensorSamples],
    batch_sizes: dict[str, int],
    augment: bool,
    seed: int,
    world_size: int,
    rank: int,
    num_workers: int,
) -> DataLoader | dict[str, DataLoader]:
    """The training loader of ``train_on`` over its ``parts`` (`train_parts`), in batches of
    ``batch_sizes[part]``: one shuffled loader, a pair of them, or the sequential passes."""
    if train_on in SEQUENTIAL:
        return sequential_loader(parts, batch_sizes, seed, augment, world_size, rank, num_workers)
    loaders = {
        p: shuffled_loader(s, batch_sizes[p], augment, num_workers) for p, s in parts.items()
    }
    return loaders if train_on in PAIRED else loaders[train_on]


def same_order_loader(samples: TensorSamples, batch_size: int, seed: int) -> DataLoader:
    """A shuffled loader over rows a method made itself (cached features and their targets,
    images with their forget rows), the same batches in the same seeded order on every process.

    Its sampler is a one-replica `DistributedSampler`, which Lightning leaves in place under DDP
    and re-seeds every epoch: each process trains on every row, so DDP averages identical
    gradients (exactly one process's step) and a small set is never padded with repeats.
    """
    lengths = [len(t) for t in samples.tensors]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise ValueError(
            f"a loader of a method's own rows needs non-empty tensors of one length, got "
            f"lengths {lengths}."
        )
    sampler = DistributedSampler(samples, num_replicas=1, rank=0, shuffle=True, seed=seed)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, collate_fn=already_batched)
