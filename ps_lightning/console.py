"""What a run prints: Lightning's noise filtered in one place, progress bars with an ETA on a
terminal (a line per epoch elsewhere), and the summary every run ends with.

The summary is read back from what the run recorded (``split.json``, ``timing.json``, the
result checkpoint's record, ``table.md``), never from a second bookkeeping; only the result's
accuracy is handed to it, measured by the step (`ps_lightning.steps`) while the model is in
memory.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
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
    # LightningCLI seeds every run, 0 unless told otherwise, and says so on every run; the seed
    # is in the run's config.yaml (seed_everything), whoever chose it.
    "seed set": r"(\[rank: \d+\] )?Seed set to ",
}

# Lines that a run's summary repeats: dropped while a command runs (`summary_repeats_quiet`),
# kept for the Python API, which prints no summary.
SUMMARY_REPEATS: dict[str, str] = {
    # PS's "kept the starting head" outcome, the summary's "early stop" line.
    "early stop": r"PS's early stop ",
}

# The loggers Lightning's rank_zero_info and its checkpoint connector write to.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
    "lightning.pytorch.trainer.connectors.callback_connector",
    # seed_everything's own logger ("Seed set to 0").
    "lightning.fabric.utilities.seed",
)


class _NoiseFilter(logging.Filter):
    """Drops the log records whose message starts with one of ``NOISE_INFO``'s patterns."""

    pattern = re.compile("|".join(f"(?:{p})" for p in NOISE_INFO.values()))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


class _SummaryRepeatFilter(_NoiseFilter):
    """Drops the log records whose message the run's summary repeats (``SUMMARY_REPEATS``)."""

    pattern = re.compile("|".join(f"(?:{p})" for p in SUMMARY_REPEATS.values()))


@contextmanager
def summary_repeats_quiet() -> Iterator[None]:
    """While a command's step runs, the lines its summary repeats are not printed twice; the
    filters go when it ends, so that a Python API call in the same process still logs them."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    added = _SummaryRepeatFilter()
    for logger in loggers:
        logger.addFilter(added)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(added)


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
    progress bar enabled and drawing (`RunProgressBar` draws none off a terminal), and on
    global rank 0."""
    if trainer is None or not trainer.is_global_zero:
        return False
    bar = trainer.progress_bar_callback
    return bar is not None and bar.is_enabled


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


@dataclass(frozen=True)
class ResultAccuracy:
    """A fit's result scored on the forget set, the retain set's validation subset and the
    test set (the datamodule's ``forget``, ``retain_val`` and ``test`` splits, as a training
    run's curves are): the summary's ``accuracy`` line. ``None``: that split was not scored.

    ``samples``: how many samples each was scored on, or ``None`` for the scores of the last
    validation epoch (a training run's, which the summary does not recompute).
    """

    forget: float | None
    retain: float | None
    test: float | None
    samples: tuple[int | None, int | None, int | None] | None = None

    def text(self) -> str:
        """The summary's line: each score to three places ("–" where not scored), then on how
        many samples, so that a subset (``retain_val``) or a short validation says so."""
        named = (("forget", self.forget), ("retain", self.retain), ("test", self.test))
        scores = ", ".join(
            f"{name} {'–' if value is None else f'{value:.3f}'}" for name, value in named
        )
        if self.samples is None:
            return f"{scores} (the last validation epoch)"
        counts = ["–" if n is None else str(n) for n in self.samples]
        return f"{scores} (of {counts[0]}, {counts[1]} and {counts[2]} samples)"


def run_summary(
    subcommand: str, run_dir: Path, wall_seconds: float, accuracy: ResultAccuracy | None = None
) -> str:
    """The lines a run ends with: request, the result's accuracy (``accuracy``, a fit's), where
    the result went, fit and wall time (``wall_seconds``: the whole command's), what PS's early
    stop did and, for ``test``, the comparison table."""
    lines = [f"ps-lightning {subcommand}: done in {wall_seconds:.1f} s (wall time)"]
    manifest_path = run_dir / "split.json"
    if manifest_path.is_file():
        lines.append(f"  request     {request_text(json.loads(manifest_path.read_text()))}")
    if accuracy is not None:
        lines.append(f"  accuracy    {accuracy.text()}")
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


def print_summary(
    subcommand: str, run_dir: Path, wall_seconds: float, accuracy: ResultAccuracy | None = None
) -> None:
    """`run_summary` on stdout, flushed: the last thing a run prints, after any bar."""
    print(run_summary(subcommand, run_dir, wall_seconds, accuracy), file=sys.stdout, flush=True)


class RunProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num``: Lightning shows the last four characters of
    the logger's version, here the run name (``inal`` for ``original``); the run folder is in
    the summary instead.

    Off a terminal (``terminal``: whether stdout is one, by default) tqdm's redrawn frames
    would pile up in a log file or a pipe as fragments: no bar is drawn there, and a training
    epoch's metrics are written as one line instead, at most one every ``line_interval``
    seconds (PS runs 50 epochs in a second; a CIFAR-10 epoch takes a minute).
    """

    line_interval = 10.0

    def __init__(self, terminal: bool | None = None) -> None:
        super().__init__()
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        if not self.terminal:
            self.disable()
        self._last_line = 0.0
        self._lines_for = 0  # the epochs done when the last line was written

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_line = time.perf_counter()
        # A resumed run starts with its earlier epochs done.
        self._lines_for = trainer.fit_loop.epoch_progress.current.completed

    # An epoch's line is written once its metrics are all in: the module logs its own in its
    # on_train_epoch_end, which Lightning calls after the callbacks'.
    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_line(trainer, trainer.lightning_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._epoch_line(trainer, pl_module)

    def _epoch_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.fit_loop.epoch_progress.current.completed
        now = time.perf_counter()
        if (
            self.terminal
            or not trainer.is_global_zero
            or done <= self._lines_for
            or now - self._last_line < self.line_interval
        ):
            return
        self._last_line, self._lines_for = now, done
        total = trainer.max_epochs
        of = f"/{total}" if total is not None and total > 0 else ""
        metrics = ", ".join(
            f"{name} {Tqdm.format_num(value)}"
            for name, value in self.get_metrics(trainer, pl_module).items()
        )
        print(f"epoch {done}{of} done{': ' + metrics if metrics else ''}", flush=True)
