"""What the benchmark harness runs: its request kinds (scenarios) and its methods, each a
config file of the dataset and the command-line values that complete it.

A method here is ``(config file, overrides)``: ``configs/<dataset>/<config file>`` run with the
overrides after it. `method_configs` gives a dataset's methods, `parse_variant` one more from
the command line (``--variant``).

`METHOD_CONFIGS` is the registry of the project's methods: a new method is its class, an entry
here and its config in every dataset folder of configs/; tests/test_registry.py fails while a
method class has no entry, or an entry no config in some dataset folder.
"""

from __future__ import annotations

import json
from typing import Any

SCENARIOS: dict[str, list[str]] = {
    # The paper's request: 10% of class 1.
    "subclass": [
        "--data.init_args.forget",
        "classes",
        "--data.init_args.forget_classes",
        "[1]",
        "--data.init_args.forget_ratio",
        "0.1",
    ],
    "random": ["--data.init_args.forget", "random", "--data.init_args.forget_ratio", "0.1"],
    "wholeclass": [
        "--data.init_args.forget",
        "classes",
        "--data.init_args.forget_classes",
        "[1]",
        "--data.init_args.forget_ratio",
        "1.0",
    ],
}

# name → (config file of the dataset, overrides). `ps` is the shipped configuration; `ps_paper`
# is completed per dataset by `method_configs`.
METHOD_CONFIGS: dict[str, tuple[str, list[str]]] = {
    "naive_ps": ("naive_ps.yaml", []),
    "ps_paper": (
        "ps.yaml",
        [
            "--model.init_args.method",
            "ps",
            "--model.init_args.trainable",
            "bias",
            "--model.init_args.loss",
            "paper",
            "--model.init_args.optimizer",
            "adam",
            "--model.init_args.weight_decay",
            "0.0001",
            "--model.init_args.early_stop",
            "off",
            "--model.init_args.retain_anchor",
            "0",
        ],
    ),
    "ps": ("ps.yaml", []),
    "finetune": ("finetune.yaml", []),
    "gradient_ascent": ("gradient_ascent.yaml", []),
    "random_label": ("random_label.yaml", []),
    "l1_sparse": ("l1_sparse.yaml", []),
    "salun": ("salun.yaml", []),
    "scrub": ("scrub.yaml", []),
    "ssd": ("ssd.yaml", []),
}

# The released code's PS learning rate and epochs per dataset (its MNIST, CIFAR-10, CIFAR-100
# and TinyImageNet settings; the 28x28 grayscale sets take MNIST's): `ps_paper` runs these
# whatever the dataset's ps.yaml ships.
PAPER_PS_SCHEDULE: dict[str, tuple[float, int]] = {
    "digits": (0.01, 50),
    "mnist": (0.01, 50),
    "fashion_mnist": (0.01, 50),
    "cifar10": (0.05, 150),
    "cifar100": (0.15, 150),
    "tinyimagenet": (0.3, 150),
}


def method_configs(dataset: str) -> dict[str, tuple[str, list[str]]]:
    """The methods the harness offers on ``dataset``: `METHOD_CONFIGS`, with `ps_paper` given
    the paper's learning rate and epochs for it (left out where the paper has none)."""
    methods: dict[str, tuple[str, list[str]]] = {}
    for name, (config, overrides) in METHOD_CONFIGS.items():
        if name == "ps_paper":
            if dataset not in PAPER_PS_SCHEDULE:
                continue
            lr, epochs = PAPER_PS_SCHEDULE[dataset]
            overrides = [*overrides, "--model.init_args.lr", str(lr)]
            overrides += ["--model.init_args.epochs", str(epochs)]
        methods[name] = (config, overrides)
    return methods


def parse_variant(text: str) -> tuple[str, tuple[str, list[str]]]:
    """``name=base.yaml:key=value,key=value`` → a method; keys are model init arguments."""
    name, _, spec = text.partition("=")
    config, _, assignments = spec.partition(":")
    overrides: list[str] = []
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        overrides += [f"--model.init_args.{key}", value]
    if not name or not config.endswith(".yaml"):
        raise ValueError(f"--variant {text!r}: expected name=ps.yaml:key=value,key=value")
    return name, (config, overrides)


def cli_value(value: Any) -> str:
    """A value (a grid's, from YAML) as a command-line value: booleans and numbers as JSON
    writes them."""
    return value if isinstance(value, str) else json.dumps(value)
