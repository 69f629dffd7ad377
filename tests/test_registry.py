"""A method or a dataset added by halves fails here: every unlearning method class has an entry
in the harness's registry (`METHOD_CONFIGS`) whose config runs it in every dataset folder of
configs/, every entry has its config in every dataset folder, and a dataset folder holds the
chain's steps and the registered methods' configs, nothing else.

A dataset is a folder of configs/ (tests/test_configs.py checks it ships the chain's steps).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT

import ps_lightning.prototype_surgery
import ps_lightning.unlearning
from ps_lightning.harness.methods import METHOD_CONFIGS
from ps_lightning.steps import resolved_config
from ps_lightning.unlearning import ImageUnlearningModule, UnlearningModule

CONFIGS = REPO_ROOT / "configs"
DATASETS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir())
# The configs of a dataset folder that are steps of the chain (or its data block), not methods.
STEPS = {"data.yaml", "original.yaml", "retrain.yaml", "evaluate.yaml"}
# The bases the methods build on: not methods of their own.
BASES = {UnlearningModule, ImageUnlearningModule}


@functools.cache
def method_classes() -> frozenset[type]:
    """Every unlearning method class of the project: the subclasses of `UnlearningModule` in
    ps_lightning.unlearning and ps_lightning.prototype_surgery (every module imported first), but
    the bases."""
    for package in (ps_lightning.unlearning, ps_lightning.prototype_surgery):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    found: set[type] = set()
    pending = [UnlearningModule]
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            if subclass.__module__.startswith("ps_lightning."):  # not a test's stand-in
                found.add(subclass)
    return frozenset(found - BASES)


@functools.cache
def class_run_by(config: Path, overrides: tuple[str, ...] = ()) -> type:
    """The model class ``config`` runs (with ``overrides`` after it), as the CLI resolves it."""
    path = resolved_config(["fit", "--config", str(config), *overrides])["fit"]["model"]
    module, _, name = path["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def registered_classes(dataset: str) -> dict[type, list[str]]:
    """The classes the registered methods run on ``dataset``: class → method names (a method
    whose config is missing there runs none)."""
    classes: dict[type, list[str]] = {}
    for name, (config, overrides) in METHOD_CONFIGS.items():
        path = CONFIGS / dataset / config
        if path.is_file():
            classes.setdefault(class_run_by(path, tuple(overrides)), []).append(name)
    return classes


def test_the_method_classes_are_found() -> None:
    names = {cls.__name__ for cls in method_classes()}
    assert {"PSUnlearnModule", "FineTune", "SSD", "SalUn"} <= names, names


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_method_class_runs_from_a_registered_config_of_the_dataset(dataset: str) -> None:
    missing = sorted(c.__qualname__ for c in method_classes() - set(registered_classes(dataset)))
    assert not missing, (
        f"method classes {missing} run from no config of configs/{dataset}/ registered in "
        "ps_lightning/harness/methods.py: give each an entry in METHOD_CONFIGS and a config in "
        "every dataset folder"
    )


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_registered_method_has_its_config_in_the_dataset_folder(dataset: str) -> None:
    missing = sorted(
        f"{name} ({config})"
        for name, (config, _) in METHOD_CONFIGS.items()
        if not (CONFIGS / dataset / config).is_file()
    )
    assert not missing, f"configs/{dataset}/ lacks the configs of the registered methods {missing}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_config_of_the_dataset_is_a_step_or_a_registered_method(dataset: str) -> None:
    registered = {config for config, _ in METHOD_CONFIGS.values()}
    unknown = sorted(
        p.name
        for p in (CONFIGS / dataset).glob("*.yaml")
        if p.name not in STEPS and p.name not in registered
    )
    assert not unknown, (
        f"configs/{dataset}/{unknown}: neither a step of the chain nor the config of a method "
        "registered in ps_lightning/harness/methods.py (METHOD_CONFIGS)"
    )


def test_every_registered_method_runs_an_unlearning_method() -> None:
    for name, (config, overrides) in METHOD_CONFIGS.items():
        for dataset in DATASETS:
            path = CONFIGS / dataset / config
            if path.is_file():
                assert class_run_by(path, tuple(overrides)) in method_classes(), (name, dataset)
