"""Every shipped config parses: keys exist on their classes and values have the right types.

Only digits is trained in the tests; the MNIST, CIFAR and TinyImageNet configs would otherwise
be checked by nobody before a user's first GPU run.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from ps_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
# configs/<dataset>/data.yaml is the data block the configs share, not a config of its own.
CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.name != "data.yaml")
DATASETS = sorted(p.name for p in (REPO / "configs").iterdir() if p.is_dir())
# The steps that train a model from scratch: their data differs from the shared block.
TRAINING = ("original", "retrain")


def test_every_dataset_ships_every_step() -> None:
    steps = {"original", "retrain", "naive_ps", "ps", "evaluate", "data"}
    for dataset in ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet"):
        assert steps <= {p.stem for p in (REPO / "configs" / dataset).glob("*.yaml")}, dataset


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_step_but_training_refers_to_the_datasets_data_block(dataset: str) -> None:
    for config in sorted((REPO / "configs" / dataset).glob("*.yaml")):
        if config.stem not in (*TRAINING, "data"):
            assert yaml.safe_load(config.read_text())["data"] == "data.yaml", config


def printed_config(config: Path) -> dict:
    subcommand = "test" if config.stem == "evaluate" else "fit"
    output, errors = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(errors),
        pytest.raises(SystemExit) as stop,
    ):
        cli_main([subcommand, "--config", str(config), "--print_config"])
    assert stop.value.code in (0, None), (output.getvalue() + errors.getvalue())[-2000:]
    return yaml.safe_load(output.getvalue())


def request_of(data: dict[str, Any]) -> dict[str, Any]:
    """The request record a data block's datamodule checks manifests against."""
    module, _, name = data["class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(module), name)
    # Without a manifest, and without reading files where the config downloads them.
    return datamodule(**{**data["init_args"], "split_manifest": None}).request


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_parses_and_asks_for_the_shared_request(config: Path) -> None:
    printed = printed_config(config)
    assert "class_path" in printed["model"]
    shared = yaml.safe_load((config.parent / "data.yaml").read_text())
    data = printed["data"]
    assert data["class_path"] == shared["class_path"]
    if config.stem in TRAINING:
        # They draw the split themselves, and must draw the request the other steps read.
        assert data["init_args"]["split_manifest"] is None
        assert request_of(data) == request_of(shared)
    else:
        assert data["init_args"] | shared["init_args"] == data["init_args"]
