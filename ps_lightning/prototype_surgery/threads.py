"""The intra-op threads and the NVML probe of head-sized work (the PS epochs on cached
features, the d×d surgery algebra), and their restoration afterwards.

Matrices of a few hundred rows by 64 columns gain nothing from a second thread, and beside
other busy processes two threads took 26–31× as long as one for the same epochs
(benchmarks/ps_request_speed.py). Feature extraction keeps the process's own setting.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

import lightning as L
import torch

HEAD_THREADS = 1

# Lightning sets this so that asking whether CUDA is available never initialises CUDA (fork
# safety); torch's `Adam.step` asks at every step. On a machine without the NVIDIA driver the
# NVML library is missing, torch retries loading it at each of those calls (~0.26 ms, 0.3 s of a
# 1,200-step PS fit; benchmarks/ps_request_speed.py), and without a driver there is no CUDA to
# initialise: the plain check is as safe and costs microseconds.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@functools.cache
def nvml_loadable() -> bool:
    """Whether the NVIDIA management library (shipped with the driver) can be loaded."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


class HeadThreads(L.Callback):
    """The PS epochs run with ``HEAD_THREADS`` intra-op threads, and every PSUnlearnModule epoch
    (method block's too: 530 Adam steps on a whole Fashion-MNIST class) without the per-step
    NVML probe where no NVIDIA driver is installed (`NVML_CHECK`); the process's own settings
    are restored when training ends, also by an exception."""

    def __init__(self) -> None:
        self.before: int | None = None
        self.nvml_check: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Method block trains a network block: the process's threads serve it.
        if getattr(pl_module, "block", None) is None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(HEAD_THREADS)
        if os.environ.get(NVML_CHECK) == "1" and not nvml_loadable():
            self.nvml_check = os.environ[NVML_CHECK]
            os.environ[NVML_CHECK] = "0"

    def _restore(self) -> None:
        if self.before is not None:
            torch.set_num_threads(self.before)
            self.before = None
        if self.nvml_check is not None:
            os.environ[NVML_CHECK] = self.nvml_check
            self.nvml_check = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
