"""Every shipped config parses: keys exist on their classes and values have the right types.

Only digits is trained in the tests; the other datasets' configs would otherwise be checked by
nobody before a user's first GPU run. A dataset is a folder of configs/ (the files at the top of
configs/ are blocks the datasets' configs include); tests/test_registry.py checks that every
dataset has a config for every registered method.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.requests import request_record
from ps_lightning.harness.methods import METHOD_CONFIGS
from ps_lightning.steps import cli_main, resolved_config

REPO = Path(__file__).resolve().parents[1]
# configs/<dataset>/data.yaml is the data block the configs share, not a config of its own.
CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.name != "data.yaml")
DATASETS = sorted(p.name for p in (REPO / "configs").iterdir() if p.is_dir())
# The steps that train a model from scratch: their data differs from the shared block.
TRAINING = ("original", "retrain")


def test_every_folder_of_configs_is_a_dataset_with_its_data_block() -> None:
    assert "digits" in DATASETS
    for dataset in DATASETS:
        assert (REPO / "configs" / dataset / "data.yaml").is_file(), dataset


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_ships_every_step(dataset: str) -> None:
    steps = {"original", "retrain", "naive_ps", "ps", "evaluate", "data"}
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
    """The request record a data block's datamodule checks manifests against (from its
    settings and the base class's defaults: no dataset is read)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(UnlearningDataModule.__init__).parameters.items()
    }
    given = {**defaults, **data["init_args"]}
    forget_classes = [1] if given["forget_classes"] is None else given["forget_classes"]
    return request_record(
        given["forget"],
        forget_classes,
        given["forget_ratio"],
        given["seed"],
        given["forget_indices_file"],
    )


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
        # What the config runs: its values, those of the files it includes, the class defaults.
        config = REPO / "configs" / dataset / config_name
        model = resolved_config(["fit", "--config", str(config)])["fit"]["model"]["init_args"]
        runs = {key: model[key] for key in result["chosen_values"]}
        assert runs == result["chosen_values"], f"{dataset} {method}: config runs {runs}"
