"""Shared set-up of the unlearning, evaluation and DDP tests.

A small original LeNet5 (and its retrained counterpart) is trained once per session through the
real CLI, on the embedded digits, with the shipped configs; every test copies what it mutates.

Test modules import the fixtures they use from here. Pytest registers an imported fixture once
per module, so the expensive runs are cached in this module, not by pytest's session scope.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from ps_lightning.prototype_surgery.ledger import file_sha256
from ps_lightning.steps import run_step

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "digits"
QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
# What the default digits request (10% of class 1, seed 209) forgets: the training set has 146
# samples of class 1.
DEFAULT_NUM_FORGET = 15

_CACHE: dict[str, Any] = {}


def _once(key: str, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def run_cli(
    subcommand: str, config: str, save_dir: Path, run: str, *args: str, in_child: bool = False
) -> Path:
    """``ps-lightning <subcommand> --config configs/digits/<config> ...``; returns the run dir.

    ``in_child``: in a fresh process. Runs that fork (``ddp_fork``) need it: forked from the
    test process, whose earlier tests left threads (event-file writers, progress-bar monitors)
    that may hold a lock at the fork, the children can wait on that lock for ever."""
    run_step(
        [
            subcommand,
            "--config",
            str(CONFIGS / config),
            "--run",
            run,
            "--trainer.logger.init_args.save_dir",
            str(save_dir),
            *QUIET,
            *args,
        ],
        in_child=in_child,
    )
    return save_dir / "digits" / run


def naive_in_child(
    original_ckpt: Path, manifest: Path, folder: Path, *args: str, timeout: float | None = None
) -> tuple[str, Path]:
    """A digits Naive PS run through the real command in a child process (run ``naive`` under
    ``folder/runs``, working directory ``folder``), as a user launches it: its printed output
    (stdout and stderr together) and its run folder. Fails the test if the command fails."""
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "ps_lightning.cli",
            "fit",
            "--config",
            str(CONFIGS / "naive_ps.yaml"),
            "--run",
            "naive",
            "--model.init_args.original_ckpt",
            str(original_ckpt),
            "--data.init_args.split_manifest",
            str(manifest),
            "--trainer.logger.init_args.save_dir",
            str(folder / "runs"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        timeout=timeout,
    )
    assert finished.returncode == 0, finished.stdout[-3000:]
    return finished.stdout, folder / "runs" / "digits" / "naive"


def result_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "model.ckpt"


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def fc_weight(path: Path) -> torch.Tensor:
    return load_checkpoint(path)["state_dict"]["net.fc.weight"]


def unlearning_record(path: Path) -> dict[str, Any]:
    return load_checkpoint(path)["ps_lightning"]["unlearning"]


def write_indices(path: Path, indices: list[int]) -> Path:
    path.write_text(json.dumps(indices))
    return path


def tensorboard_events(folder: Path) -> EventAccumulator:
    """Everything TensorBoard reads from the event files directly in ``folder``."""
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def logged_text(events: EventAccumulator, tag: str) -> str:
    """The text logged under ``tag`` (once) by ``SummaryWriter.add_text``."""
    (event,) = events.Tensors(f"{tag}/text_summary")
    return tensor_util.make_ndarray(event.tensor_proto).item().decode()


def nothing_written(save_dir: Path) -> bool:
    """Whether a run left no trace (no run directory, no file) under ``save_dir``."""
    return not save_dir.exists() or not any(save_dir.rglob("*"))


@dataclass(frozen=True)
class Original:
    ckpt: Path
    manifest: Path
    sha256: str

    def copy_to(self, folder: Path) -> Path:
        """A byte-identical copy of the checkpoint in ``folder``: its own surgery index."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.ckpt"
        shutil.copyfile(self.ckpt, target)
        return target


def unlearn(
    save_dir: Path,
    run: str,
    original_ckpt: Path,
    *args: str,
    manifest: Path | None = None,
    config: str = "naive_ps.yaml",
    in_child: bool = False,
) -> Path:
    """Run an unlearning config against ``original_ckpt``; returns the result checkpoint.

    ``manifest``: the split to reuse; ``None`` draws the request given in ``args`` afresh;
    ``in_child``: as for `run_cli`.
    """
    # No manifest: the request is drawn afresh (the configs name the retrain run's manifest).
    data = ["--data.init_args.split_manifest", "null" if manifest is None else str(manifest)]
    run_dir = run_cli(
        "fit",
        config,
        save_dir,
        run,
        "--model.init_args.original_ckpt",
        str(original_ckpt),
        *data,
        *args,
        in_child=in_child,
    )
    return result_checkpoint(run_dir)


@pytest.fixture(scope="session")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    """An original LeNet5 trained for 3 epochs with configs/digits/original.yaml."""

    def train() -> Original:
        save_dir = tmp_path_factory.mktemp("original-runs")
        run_dir = run_cli(
            "fit",
            "original.yaml",
            save_dir,
            "original",
            "--trainer.max_epochs",
            "3",
            "--lr_scheduler.init_args.T_max",
            "3",
        )
        ckpt = result_checkpoint(run_dir)
        return Original(ckpt, run_dir / "split.json", file_sha256(ckpt))

    return _once("original", train)


@pytest.fixture(scope="session")
def retrain_ckpt(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The retrained model (train_on: retain) of the original's request, 1 epoch."""

    def train() -> Path:
        save_dir = tmp_path_factory.mktemp("retrain-runs")
        run_dir = run_cli(
            "fit",
            "retrain.yaml",
            save_dir,
            "retrain",
            "--trainer.max_epochs",
            "1",
            "--lr_scheduler.init_args.T_max",
            "1",
            "--data.init_args.split_manifest",
            str(original.manifest),
        )
        return result_checkpoint(run_dir)

    return _once("retrain", train)


@pytest.fixture(scope="session")
def naive_reference(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Naive PS of the original's request, on a private copy of the original (own index);
    returns the result checkpoint. The index lies beside ``<result>/../../original/``."""

    def run() -> Path:
        base = tmp_path_factory.mktemp("naive-reference")
        ckpt = original.copy_to(base / "original")
        return unlearn(base / "runs", "naive", ckpt, manifest=original.manifest)

    return _once("naive", run)


@pytest.fixture(scope="session")
def ps_reference(original: Original, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PS (bias, 10 epochs) of the original's request; returns the result checkpoint."""

    def run() -> Path:
        base = tmp_path_factory.mktemp("ps-reference")
        ckpt = original.copy_to(base / "original")
        return unlearn(
            base / "runs",
            "ps",
            ckpt,
            "--model.init_args.epochs",
            "10",
            "--model.init_args.early_stop",
            "off",
            manifest=original.manifest,
            config="ps.yaml",
        )

    return _once("ps", run)


def init_default(method_class: type, key: str) -> Any:
    """The value a method runs ``key`` at when a config leaves it out: the default of its
    ``__init__`` argument, also one passed on to a base class."""
    for klass in method_class.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(key)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(f"{method_class.__name__} has no default for {key!r}")
