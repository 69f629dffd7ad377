"""Every shipped config parses: keys exist on their classes and values have the right types.

Only digits is trained in the tests; the MNIST, CIFAR and TinyImageNet configs would otherwise
be checked by nobody before a user's first GPU run.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from unlearning_fixtures import init_default

from ps_lightning.harness.methods import METHOD_CONFIGS
from ps_lightning.steps import cli_main

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


SELECTIONS = sorted((REPO / "benchmarks" / "results").glob("*-selection.json"))


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda p: p.stem)
def test_shipped_configs_run_the_values_their_selection_chose(selection: Path) -> None:
    # The README's rule: the chosen point is what `configs/<dataset>/<method>.yaml` runs. A
    # value left out of a config runs at the method's default, so the defaults count too.
    dataset = selection.stem.removesuffix("-selection")
    chosen = json.loads(selection.read_text())["selection"]
    assert chosen, selection
    for method, result in chosen.items():
        if result["chosen_values"] is None:  # every point failed: runs as shipped
            continue
        config_name, overrides = METHOD_CONFIGS[method]
        assert not overrides, f"{method}: shipped with overrides, not by its config alone"
        model = yaml.safe_load((REPO / "configs" / dataset / config_name).read_text())["model"]
        module, _, name = model["class_path"].rpartition(".")
        method_class = getattr(importlib.import_module(module), name)
        runs = {key: init_default(method_class, key) for key in result["chosen_values"]}
        runs |= {k: v for k, v in model["init_args"].items() if k in result["chosen_values"]}
        assert runs == result["chosen_values"], f"{dataset} {method}: config runs {runs}"
