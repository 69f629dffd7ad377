"""Every shipped config parses: keys exist on their classes and values have the right types.

Only digits is trained in the tests; the MNIST, CIFAR and TinyImageNet configs would otherwise
be checked by nobody before a user's first GPU run.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from ps_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_dataset_ships_every_step() -> None:
    steps = {"original", "retrain", "naive_ps", "ps", "evaluate"}
    for dataset in ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet"):
        assert steps <= {p.stem for p in (REPO / "configs" / dataset).glob("*.yaml")}, dataset


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_parses(config: Path) -> None:
    subcommand = "test" if config.stem == "evaluate" else "fit"
    output = io.StringIO()
    with (
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
        pytest.raises(SystemExit) as stop,
    ):
        cli_main([subcommand, "--config", str(config), "--print_config"])
    assert stop.value.code in (0, None), output.getvalue()[-2000:]
    assert "class_path" in output.getvalue()
