"""Shared helpers: the repository root, a stand-in Trainer for datamodule hooks and the
console script run in this process."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def fake_trainer(
    log_dir: str | Path | None = None,
    training: bool = False,
    world_size: int = 1,
    global_rank: int = 0,
    lightning_module: object = None,
) -> SimpleNamespace:
    """The few Trainer attributes an UnlearningDataModule reads, without running a Trainer;
    ``lightning_module`` is the module being fitted."""
    return SimpleNamespace(
        lightning_module=lightning_module,
        log_dir=None if log_dir is None else str(log_dir),
        is_global_zero=global_rank == 0,
        training=training,
        world_size=world_size,
        global_rank=global_rank,
    )


def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative and sorted (to show what a call wrote)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def command_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``ps-lightning ARGS`` (the console script's `main`, on
    this process's arguments) in this process."""
    from ps_lightning.cli import main  # imported when used: conftest stays import-light

    with (
        mock.patch.object(sys, "argv", ["ps-lightning", *args]),
        pytest.raises(SystemExit) as exited,
    ):
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err
