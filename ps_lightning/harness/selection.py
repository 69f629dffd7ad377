"""One selection rule for every method: each grid point of a method (any model init argument
can be an axis) runs on the selection seeds, and the point with the lowest mean avg gap over
those seeds and the scenarios is chosen; a point that failed or is not finite in any run never
is. `run_selection` runs a grid and writes the selection table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from ps_lightning.files import atomic_write_json, atomic_write_text
from ps_lightning.harness.chain import Harness
from ps_lightning.harness.methods import METHOD_CONFIGS, cli_value
from ps_lightning.harness.tables import selection_markdown


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the grid file's order."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def point_name(method: str, point: dict[str, Any]) -> str:
    """A run and table name for a grid point: letters, digits, ``_`` and ``-`` only (the
    evaluation names a submodule after it, which may hold no ``.``: 0.01 reads ``0p01``)."""
    parts = [f"{key}-{cli_value(value)}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9_-]", "_", "__".join([method, *parts]).replace(".", "p"))


def point_overrides(point: dict[str, Any]) -> list[str]:
    """A grid point as the model init arguments of a command line."""
    return [
        arg
        for key, value in point.items()
        for arg in (f"--model.init_args.{key}", cli_value(value))
    ]


def read_grid(path: Path, methods: dict[str, tuple[str, list[str]]]) -> dict[str, list[dict]]:
    """``{method: {init_arg: [values]}}`` from a YAML file, for the benchmarked ``methods``:
    those not in it run as shipped, and its methods not benchmarked now are left out (so that
    one method's selection can run alone)."""
    grid = yaml.safe_load(path.read_text()) or {}
    if not isinstance(grid, dict) or not all(
        isinstance(axes, dict) and all(isinstance(v, list) and v for v in axes.values())
        for axes in grid.values()
    ):
        raise ValueError(
            f"grid file '{path}': expected {{method: {{model_init_arg: [value, ...]}}}} with "
            "non-empty value lists."
        )
    unknown = sorted(set(grid) - set(methods) - set(METHOD_CONFIGS))
    if unknown:
        raise ValueError(
            f"grid file '{path}' names unknown methods {unknown}; known: {sorted(METHOD_CONFIGS)}."
        )
    return {method: grid_points(axes) for method, axes in grid.items() if method in methods}


class NothingToSelect(RuntimeError):
    """Every grid point of a method failed or gave a non-finite gap."""


def mean_gap(values: list[float]) -> float | None:
    """A grid point's mean avg gap over its runs; ``None`` when any run failed or is not
    finite (a failed run scores ``inf``)."""
    return statistics.fmean(values) if all(math.isfinite(v) for v in values) else None


def select(scores: dict[str, list[float]], points: dict[str, dict[str, Any]]) -> tuple[str, float]:
    """The point with the lowest mean score (avg gap over selection seeds and scenarios); a
    point failed or not finite in any run is never chosen (`NothingToSelect` if none is left)."""
    means = {name: mean_gap(scores[name]) for name in points}
    usable = {name: mean for name, mean in means.items() if mean is not None}
    if not usable:
        raise NothingToSelect(f"every grid point of {sorted(points)} failed; nothing to select.")
    best = min(usable, key=usable.__getitem__)
    return best, usable[best]


def kept_selection(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """With ``--select-methods``: the entries of the other methods in the selection table at
    ``path``, which they keep; refused when that table was made on other seeds or scenarios
    (its entries could not stand beside the new ones, and dropping them would lose them)."""
    if args.select_methods is None or not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    if (previous["select_seeds"], previous["scenarios"]) != (args.select_seeds, args.scenarios):
        raise ValueError(
            f"--select-methods keeps the other methods' entries of '{path}', which was made on "
            f"selection seeds {previous['select_seeds']} and scenarios {previous['scenarios']}; "
            "run with those (--select-seeds, --scenarios), or select every method (no "
            "--select-methods)."
        )
    return {m: e for m, e in previous["selection"].items() if m not in args.select_methods}


def run_selection(
    harness: Harness,
    args: argparse.Namespace,
    methods: dict[str, tuple[str, list[str]]],
    grid: dict[str, list[dict]],
    started: float,
) -> dict[str, tuple[str, list[str]]]:
    """Run every point of ``grid`` (`read_grid`) on the selection seeds; return the methods
    with their chosen points, and write the selection table."""
    stem = args.out / f"{args.dataset}-selection"
    kept = kept_selection(stem.with_suffix(".json"), args)  # refused before any run
    candidates: dict[str, tuple[str, list[str]]] = {}
    points: dict[str, dict[str, dict[str, Any]]] = {}
    for method, method_points in grid.items():
        config, overrides = methods[method]
        points[method] = {}
        for point in method_points:
            name = point_name(method, point)
            points[method][name] = point
            # A point's run is its method's: the method's --method-arg arguments, added here
            # unless the point bears the method's own name (the harness adds them by name).
            extra = harness.method_extra.get(method, []) if name != method else []
            candidates[name] = (config, [*overrides, *point_overrides(point), *extra])
    scores: dict[str, list[float]] = {name: [] for name in candidates}
    for scenario in args.scenarios:
        for seed in args.select_seeds:
            print(
                f"[{args.dataset} {scenario}] selection seed {seed} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            summary = harness.seed_run(seed, scenario, candidates)
            for name in candidates:
                row = summary["models"].get(name)
                scores[name].append(row["gap_to_retrain"]["avg_gap"] if row else math.inf)
    selection: dict[str, Any] = {}
    chosen_methods = dict(methods)
    for method, method_points in points.items():
        try:
            best, gap = select({n: scores[n] for n in method_points}, method_points)
        except NothingToSelect as error:
            # The method is reported as shipped, so that its failure shows in the tables; the
            # other methods' selection and report go on.
            print(f"  {method}: {error} It is reported with its shipped values.", flush=True)
            best, gap = None, None
        else:
            config, overrides = methods[method]
            chosen_methods[method] = (config, [*overrides, *point_overrides(method_points[best])])
        selection[method] = {
            "commit": harness.commit,
            "chosen": best,
            "chosen_values": None if best is None else method_points[best],
            "mean_avg_gap": gap,
            "points": {
                name: {
                    "values": values,
                    # A failed or non-finite run is null: standard JSON has no Infinity.
                    "avg_gaps": [v if math.isfinite(v) else None for v in scores[name]],
                    "mean_avg_gap": mean_gap(scores[name]),
                }
                for name, values in method_points.items()
            },
        }
    selection = kept | selection
    text = selection_markdown(args.dataset, args.scenarios, args.select_seeds, selection)
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_json(
        stem.with_suffix(".json"),
        {
            "rule": "lowest mean avg_gap over the selection seeds and scenarios",
            "commit": harness.commit,
            "harness": harness.settings(),
            "select_seeds": args.select_seeds,
            "report_seeds": args.seeds,
            "scenarios": args.scenarios,
            "grid_file": str(args.grid),
            "selection": selection,
        },
    )
    print(text, flush=True)
    return chosen_methods
