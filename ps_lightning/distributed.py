"""Exact collectives for statistics: every sample counted once across processes."""

from __future__ import annotations

import lightning as L
import torch


def gather_rows(module: L.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate each process's rows on every process (shards may differ in length)."""
    if module.trainer.world_size == 1:
        return rows
    count = torch.tensor([len(rows)], device=rows.device)
    counts = module.all_gather(count).flatten().tolist()
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded)
    return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)])
