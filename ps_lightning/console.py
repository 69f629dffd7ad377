"""What a run prints: Lightning's noise filtered in one place, progress bars with an ETA, and
the summary every run ends with.

The summary is read back from what the run recorded (``split.json``, ``timing.json``, the
result checkpoint's record, ``table.md``), never from a second bookkeeping.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm

from ps_lightning.files import safe_torch_load
from ps_lightning.timing import TIMING_NAME

T = TypeVar("T")

# Warnings Lightning and torch raise on every run that say nothing about this project's runs,
# by name; each pattern is matched from the start of the message.
NOISE_WARNINGS: dict[str, str] = {
    # Lightning's own pytree helper uses a class torch has deprecated: nothing a user can change.
    "LeafSpec deprecation": r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Unlearning and evaluation configs set no seed on purpose: their work is deterministic
    # (closed form, cached features, seeded probes); Lightning then seeds 0 and says so.
    "no seed": r"No seed found, seed set to",
    # UnlearningModule.setup sets each method's epoch count itself (0 for Naive PS) after the
    # Trainer is built, so the configs leave the Trainer's unset.
    "1000 epochs": r"`max_epochs` was not set\. Setting it to 1000 epochs",
    # The unlearning modules have no validation loop by design; the datamodule's validation
    # loaders serve the training runs' curves.
    "no validation_step": r"You passed in a `val_dataloader` but have no `validation_step`",
    # PS trains a few batches per epoch on cached features and logs its losses once per epoch.
    "log_every_n_steps": r"The number of training batches \(\d+\) is smaller than the logging",
    # The frozen backbone of an unlearning method is in eval mode on purpose
    # (UnlearningModule.train: its BatchNorm statistics must not change).
    "modules in eval mode": r"Found \d+ module\(s\) in eval mode at the start of training",
}

# Lightning's info lines (its rank-zero and connector loggers) that are tips or say nothing.
NOISE_INFO: dict[str, str] = {
    # Advertisements for Lightning's cloud services (litlogger, litmodels).
    "lightning tips": r"💡 Tip: ",
    # Lists of accelerators nobody asked for; the one in use is in timing.json and the summary.
    "accelerators available": r"(GPU|TPU|HPU) available: ",
    # Naive PS trains no epoch: its work happens before the loop, which then "stops".
    "max_epochs=0": r"`Trainer\.fit` stopped: `max_epochs=0` reached\.",
    # Lightning's full snapshots (last.ckpt, to resume) hold the optimizer state on purpose;
    # this project loads every checkpoint with weights_only=True regardless.
    "weights_only default": r"`weights_only` was not set, defaulting to `False`",
    # The classifiers bring their own ModelCheckpoint (checkpoints/last.ckpt) by design.
    "callbacks override": r"The following callbacks returned in `LightningModule\.configure_cal",
}

# The loggers Lightning's rank_zero_info and its checkpoint connector write to.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
    "lightning.pytorch.trainer.connectors.callback_connector",
)


class _NoiseFilter(logging.Filter):
    """Drops the log records whose message starts with one of ``NOISE_INFO``'s patterns."""

    pattern = re.compile("|".join(f"(?:{p})" for p in NOISE_INFO.values()))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_known_noise() -> None:
    """Filter the lines of ``NOISE_WARNINGS`` and ``NOISE_INFO``; every other warning and log
    line still passes. Idempotent: a process that runs many steps installs each filter once."""
    for pattern in NOISE_WARNINGS.values():
        # filterwarnings replaces an identical earlier filter rather than adding another.
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoiseFilter) for f in logger.filters):
            logger.addFilter(_NoiseFilter())


def progress(
    items: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    enabled: bool | None = None,
    unit: str = "it",
) -> Iterator[T]:
    """``items`` with a tqdm bar (count, rate, ETA) on stderr; ``enabled=None``: only on a
    terminal. The bar is removed when done."""
    return iter(
        tqdm(
            items,
            desc=description,
            total=total,
            disable=None if enabled is None else not enabled,
            leave=False,
            unit=unit,
            dynamic_ncols=True,
        )
    )


def trainer_progress(trainer: L.Trainer | None) -> bool:
    """Whether work inside a Trainer shows a bar: as Lightning's own, only with the Trainer's
    progress bar enabled, and on global rank 0."""
    return (
        trainer is not None and trainer.is_global_zero and trainer.progress_bar_callback is not None
    )


class StepProgress:
    """Steps done out of ``total`` (``None``: not known), time elapsed and ETA (tqdm's meter),
    one line per step run: a log file reads it as a terminal does. Steps found finished
    (cached) count as done but not in the rate, so a resumed benchmark's ETA is not fooled by
    them."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        self.ran = 0
        self.started = time.perf_counter()

    def line(self, name: str) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.ran / elapsed if self.ran and elapsed > 0 else None
        eta = "" if self.total is None else ", ETA {remaining}"
        meter = tqdm.format_meter(
            self.done,
            self.total,
            elapsed,
            rate=rate,
            unit="step",
            bar_format="[{n_fmt}/{total_fmt} done, {elapsed} elapsed" + eta + "]",
        )
        return f"  {meter} {name}"

    def finished(self, ran: bool) -> None:
        self.done += 1
        self.ran += int(ran)


# ---------------------------------------------------------------------- the run's summary
def request_text(manifest: dict[str, Any]) -> str:
    """A split's request in one line, from its ``split.json``."""
    request = dict(manifest.get("request") or {})
    kind = request.pop("kind", "?")
    details = ", ".join(f"{key} {value}" for key, value in request.items())
    return (
        f"{manifest.get('dataset')}, {kind} ({details}): forget {manifest.get('num_forget')} "
        f"samples, retain {manifest.get('num_retain')}"
    )


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def run_summary(subcommand: str, run_dir: Path, wall_seconds: float) -> str:
    """The lines a run ends with: request, where its result went, fit and wall time, what PS's
    early stop did and, for ``test``, the comparison table."""
    lines = [f"ps-lightning {subcommand}: done in {wall_seconds:.1f} s (wall time)"]
    manifest_path = run_dir / "split.json"
    if manifest_path.is_file():
        lines.append(f"  request     {request_text(json.loads(manifest_path.read_text()))}")
    result = run_dir / "checkpoints" / "model.ckpt"
    if result.is_file():
        lines.append(f"  result      {result}")
    lines.append(f"  run folder  {run_dir}")
    timing_path = run_dir / TIMING_NAME
    if timing_path.is_file():
        timing = json.loads(timing_path.read_text())
        lines.append(
            f"  fit time    {_seconds(timing.get('fit_seconds'))} on {timing.get('device')}"
            f" (peak host memory {timing.get('peak_host_mib', 0):.0f} MiB)"
        )
    if result.is_file():
        record = safe_torch_load(result).get("ps_lightning") or {}
        stop = (record.get("unlearning") or {}).get("early_stop_outcome")
        if stop is not None:
            lines.append(f"  early stop  {stop}")
    table = run_dir / "table.md"
    if subcommand == "test" and table.is_file():
        lines += ["", table.read_text().rstrip()]
    return "\n".join(lines)


def print_summary(subcommand: str, run_dir: Path, wall_seconds: float) -> None:
    print(run_summary(subcommand, run_dir, wall_seconds), file=sys.stdout, flush=True)


class RunProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num``: Lightning shows the last four characters of
    the logger's version, here the run name (``inal`` for ``original``); the run folder is in
    the summary instead."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
