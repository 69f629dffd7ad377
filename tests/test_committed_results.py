"""The committed tables are results of what ships.

Every row whose steps recorded their configuration digests (every table the harness has written
since it keys steps by configuration) must have the digests of the steps the harness plans today
from the shipped configs, so an edit of any config, included file, harness override or class
default fails here until the tables are regenerated. A row made before steps recorded digests
must have run its method with the arguments the shipped configuration resolves to (what its
module recorded that it ran); original and retrained models recorded no arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from ps_lightning.harness.chain import Harness, drop_unread_block_options
from ps_lightning.harness.methods import method_configs
from ps_lightning.steps import StepFailed, resolved_config

RESULTS = REPO_ROOT / "benchmarks" / "results"
TABLES = sorted(p for p in RESULTS.glob("*-*.json") if not p.stem.endswith("-selection"))
# Arguments a module records that are not configuration: where its inputs lie, and the values
# the datamodule gives it.
NOT_CONFIGURATION = {"_class_path", "_instantiator", "original_ckpt", "num_classes", "in_channels"}


def planned_steps(table: dict[str, Any], dataset: str, scenario: str, record: dict) -> dict:
    """The digest of every step `Harness.seed_steps` would run today for ``record``'s seed and
    the methods that ran with its recorded steps, failing those that failed then (the
    evaluation lists only the others)."""
    harness = Harness(
        dataset, Path("/planned"), False, configs=REPO_ROOT / "configs", **table["harness"]
    )
    digests: dict[str, str] = {}

    def plan(subcommand: str, config: str, run: str, args: list[str]) -> Path:
        name = run.split("-", 2)[-1]  # s<seed>-original, s<seed>-<scenario>-<name>
        if name in record["failed"]:
            raise StepFailed(record["failed"][name])
        step = harness.plan(subcommand, config, run, args)
        digests[name] = step.digest
        return step.run_dir

    harness.step = plan  # type: ignore[method-assign]
    offered = method_configs(dataset)
    # The methods of the run that wrote these steps: a merged table's other rows came from
    # another run (and another evaluation step). Records from before `methods_run` existed:
    # those with steps or a failure (rows merged beside them had no steps).
    ran = record.get("methods_run") or [
        m for m in table["methods"] if m in record["steps"] or m in record["failed"]
    ]
    # Steps merged in from an earlier run (`--merge`): each method's own step is keyed by its
    # configuration alone; only the evaluation depends on which methods ran together, so that
    # earlier run's evaluation is planned first and this run's replaces it.
    merged_in = [m for m in record.get("steps", {}) if m in offered and m not in ran]
    if merged_in:
        harness.seed_steps(record["seed"], scenario, {m: offered[m] for m in merged_in})
    harness.seed_steps(record["seed"], scenario, {m: offered[m] for m in ran})
    return digests


def shipped_arguments(dataset: str, method: str) -> dict[str, Any]:
    config, overrides = method_configs(dataset)[method]
    command = ["fit", "--config", str(REPO_ROOT / "configs" / dataset / config), *overrides]
    return resolved_config(command)["fit"]["model"]["init_args"]


def without(arguments: dict[str, Any]) -> dict[str, Any]:
    """The configuration among a module's arguments, as the harness keys it (a PS method's
    unread block options left out)."""
    configuration = {k: v for k, v in arguments.items() if k not in NOT_CONFIGURATION}
    drop_unread_block_options(configuration)
    return configuration


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.stem)
def test_every_committed_row_ran_the_shipped_configuration(path: Path) -> None:
    table = json.loads(path.read_text())
    dataset, scenario = path.stem.rsplit("-", 1)
    for record in table["per_seed"]:
        recorded = {n: s["config_digest"] for n, s in record.get("steps", {}).items()}
        planned = planned_steps(table, dataset, scenario, record) if recorded else {}
        stale = sorted(name for name, digest in recorded.items() if digest != planned[name])
        assert not stale, (
            f"{path.name}, seed {record['seed']}: {stale} ran another configuration than ships; "
            "regenerate the table (make bench)"
        )
        for method in table["methods"]:
            if method in recorded or method not in record["models"]:
                continue
            ran = without(record["models"][method]["unlearning"]["config"])
            assert ran == without(shipped_arguments(dataset, method)), (
                f"{path.name}: {method} ran other arguments than ships; regenerate its rows"
            )
