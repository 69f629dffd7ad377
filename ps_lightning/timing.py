"""RunTimer: wall time and peak memory of every fit, written beside its checkpoint; and when
the process began, for the wall time a run's summary reports."""

from __future__ import annotations

import os
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


def process_started() -> float | None:
    """When this process began, on the `time.perf_counter` clock, or ``None`` where the system
    does not say (only Linux's ``/proc`` is read).

    A command's wall time counts from here: interpreter start-up and ``import lightning`` (most
    of a short run's seconds) included, as the user waited for them. The kernel records the
    start in clock ticks (10 ms) after boot, on the clock ``CLOCK_BOOTTIME`` reads.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        # Field 22 is the start time; the command name (field 2) may hold spaces and
        # parentheses, so the fields are counted after its closing one (field 3 onwards).
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.perf_counter() - age


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
