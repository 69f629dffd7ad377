"""Exact collectives for statistics: every sample counted once across processes."""

from __future__ import annotations

import lightning as L
import torch


def gather_rows(module: L.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """Each process's rows on every process, in the order of the unsharded dataset.

    The shards come from the datamodule's evaluation loaders (``UnrepeatedDistributedSampler``,
    no shuffling): rank ``r`` of ``W`` holds samples ``r, r + W, r + 2W, …``, so the shards may
    differ in length by one. Interleaving them restores the dataset order, which keeps
    order-dependent results (the seeded member subsample of the MIA attack, PS's retain-anchor
    draw) identical to a single process. Shards of any other shape are concatenated by rank.
    """
    world_size = module.trainer.world_size
    if world_size == 1:
        return rows
    count = torch.tensor([len(rows)], device=rows.device)
    counts = module.all_gather(count).flatten().tolist()
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded)
    total = sum(counts)
    if counts != [len(range(rank, total, world_size)) for rank in range(world_size)]:
        return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)])
    position = torch.arange(total, device=gathered.device)
    return gathered[position % world_size, position // world_size]
