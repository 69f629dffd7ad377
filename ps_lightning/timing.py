"""RunTimer: wall time and peak memory of every fit, written beside its checkpoint."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch

from ps_lightning.files import atomic_write_json

TIMING_NAME = "timing.json"


def peak_host_memory_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class RunTimer(L.Callback):
    """Times `fit` from its start to its end (data set-up, every epoch, the last checkpoint
    aside) and records peak host and accelerator memory in ``timing.json``."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self.started
        log_dir = trainer.log_dir  # a broadcast: every rank must ask, not only rank 0
        if not trainer.is_global_zero or not log_dir:
            return
        timing = {
            "fit_seconds": seconds,
            "peak_host_mib": peak_host_memory_mib(),
            "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20
            if torch.cuda.is_available()
            else None,
            "device": str(pl_module.device),
            "world_size": trainer.world_size,
        }
        atomic_write_json(Path(log_dir) / TIMING_NAME, timing)
