"""The benchmark harness: every method on the same splits, the same original models, several
seeds, side by side with retraining.

    ps-lightning bench --dataset digits --seeds 0 1 2 3 4 \
        --scenarios subclass random wholeclass --methods naive_ps ps_paper ps

Per seed it trains one original model (seed_everything = seed), and per scenario a retrained
model on the request's retain set (the request is drawn with the same seed); then each method
unlearns from that original model, and one evaluation scores all of them together. Finished
steps are cached by a hash of their full command line, so an interrupted run resumes. Each
step prints a line with the steps done out of all planned, the time elapsed and the ETA.
Results: ``<out>/<dataset>-<scenario>.md`` and ``.json`` with mean ± std over seeds; ``<out>``
is ``<runs-dir>/results`` unless ``--out`` names another folder or ``--update-results`` asks
for the repository's committed tables (``benchmarks/results``).

A method whose step fails (e.g. non-finite weights) is recorded as failed for that seed and the
benchmark goes on without it. ``--max-epochs N`` shortens the original and retrain training
(and their cosine schedule) as ``make <dataset> MAX_EPOCHS=N`` does; ``--architecture NAME``
trains them with another registered network (the methods take it from the original's checkpoint).

One selection rule for every method (``--grid benchmarks/grids/<dataset>.yaml --select-seeds
...``): each method's grid points (any model init argument can be an axis) run on the
selection seeds, the point with the lowest mean avg gap over those seeds and the scenarios is
chosen, written to ``<out>/<dataset>-selection.{md,json}``, and only the chosen point runs on
the report seeds (``--seeds``), whose results alone fill the tables.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ps_lightning.cli import StepFailed, finished_file, resolved_config, run_step
from ps_lightning.console import StepProgress
from ps_lightning.files import atomic_write_json, atomic_write_text
from ps_lightning.models import ARCHITECTURES

# The repository's configs/ and committed result tables, beside the package (a source checkout
# or an editable install).
REPOSITORY_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REPOSITORY_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

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


METRICS = (
    "linear_probe_forget_acc",
    "relearn_steps",
    "forget_acc",
    "retain_acc",
    "test_acc",
    "target_class_test_acc",
    "mia_svc",
    "mia_svc_attack_acc",
    "mia_lira",
    "mia_lira_attack_acc",
)


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


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in the grid file's order."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def cli_value(value: Any) -> str:
    """A grid value as a command-line value (YAML booleans and numbers as JSON writes them)."""
    return value if isinstance(value, str) else json.dumps(value)


def point_name(method: str, point: dict[str, Any]) -> str:
    """A run and table name for a grid point: letters, digits, ``_`` and ``-`` only (the
    evaluation names a submodule after it, which may hold no ``.``: 0.01 reads ``0p01``)."""
    parts = [f"{key}-{cli_value(value)}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9_-]", "_", "__".join([method, *parts]).replace(".", "p"))


def point_overrides(point: dict[str, Any]) -> list[str]:
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


ARCHITECTURE_PATH = "ps_lightning.models."
# What a step's key writes for the harness's runs folder; the file in a step's run folder that
# records its key and the commit that ran it.
RUNS_DIR_KEY = "<runs-dir>"
STEP_RECORD = "bench-step.json"


@dataclass(frozen=True)
class Step:
    """One CLI step of the harness: its command (without the run's name and folder), the
    SHA-256 of its resolved configuration, and the run folder that digest names."""

    subcommand: str
    config: str
    run: str
    args: list[str]
    command: list[str]
    digest: str
    run_dir: Path


def source_commit() -> str | None:
    """The commit of the checkout this code runs from (``-dirty`` with uncommitted changes to
    tracked files), or ``None`` outside a git checkout."""
    root = REPOSITORY_CONFIGS.parent
    try:
        head, status = (
            subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if status else "")


class Harness:
    def __init__(
        self,
        dataset: str,
        runs_dir: Path,
        isolate: bool,
        extra: list[str],
        max_epochs: int | None = None,
        configs: Path = REPOSITORY_CONFIGS,
        architecture: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.configs = configs / dataset
        # Absolute: the steps' keys write it as <runs-dir> wherever their arguments name it.
        self.runs_dir = runs_dir.resolve()
        self.isolate = isolate
        self.extra = extra
        self.max_epochs, self.architecture = max_epochs, architecture
        self.progress = StepProgress(total=None)
        # Only for original and retrain training: the methods read the architecture from the
        # original's checkpoint.
        self.training = (
            [] if architecture is None else ["--model", ARCHITECTURE_PATH + architecture]
        )
        if max_epochs is not None:
            self.training += [
                "--trainer.max_epochs",
                str(max_epochs),
                "--lr_scheduler.init_args.T_max",
                str(max_epochs),
            ]

    def settings(self) -> dict[str, Any]:
        """The arguments besides the configs that every step's key holds: ``Harness(dataset,
        runs_dir, isolate, **settings)`` plans the same steps again."""
        return {
            "extra": self.extra,
            "max_epochs": self.max_epochs,
            "architecture": self.architecture,
        }

    def plan(self, subcommand: str, config: str, run: str, args: list[str]) -> Step:
        """A step as it would run, keyed by what it would run: `resolved_config` of its command
        (config files, included files, command-line values and every class default), with this
        harness's runs folder written as ``<runs-dir>``, so that the key is the same on every
        machine and still names the upstream steps' runs (whose names hold their own keys)."""
        command = [subcommand, "--config", str(self.configs / config), *args, *self.extra]
        resolved = resolved_config(command)
        resolved[subcommand].pop("run")  # the harness names the run after the key
        text = json.dumps(resolved, sort_keys=True).replace(str(self.runs_dir), RUNS_DIR_KEY)
        digest = hashlib.sha256(text.encode()).hexdigest()
        run_dir = self.runs_dir / self.dataset / f"{run}-{digest[:12]}"
        return Step(subcommand, config, run, args, command, digest, run_dir)

    def step(self, subcommand: str, config: str, run: str, args: list[str]) -> Path:
        """Run one CLI step unless a finished run of the same configuration exists; return its
        run directory, which holds `STEP_RECORD`: its configuration's digest and the commit of
        the code that ran it."""
        planned = self.plan(subcommand, config, run, args)
        run_dir = planned.run_dir
        done = finished_file(run_dir, subcommand)
        if done.is_file():
            self.progress.finished(ran=False)
            return run_dir
        if run_dir.exists():  # an interrupted attempt: its files are incomplete
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        atomic_write_json(
            run_dir / STEP_RECORD,
            {
                "config_digest": planned.digest,
                "commit": source_commit(),
                "command": planned.command,
            },
        )
        command = [
            *planned.command,
            "--run",
            run_dir.name,
            "--trainer.logger.init_args.save_dir",
            str(self.runs_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
        print(self.progress.line(f"running {run} …"), flush=True)
        try:
            run_step(command, in_child=self.isolate)
        except StepFailed:
            raise
        except Exception as error:  # any method error: recorded, the benchmark goes on
            raise StepFailed(f"{type(error).__name__}: {error}") from error
        finally:
            self.progress.finished(ran=True)
        return run_dir

    def seed_run(
        self, seed: int, scenario: str, methods: dict[str, tuple[str, list[str]]]
    ) -> dict[str, Any]:
        """Every step of one seed and scenario; the evaluation's summary with the methods that
        failed, the seed, and each step's run, configuration digest and commit."""
        runs, failed = self.seed_steps(seed, scenario, methods)
        summary = json.loads((runs["evaluate"] / "metrics.json").read_text())
        summary["failed"] = failed
        summary["seed"] = seed
        summary["steps"] = {name: step_record(run_dir) for name, run_dir in runs.items()}
        return summary

    def seed_steps(
        self, seed: int, scenario: str, methods: dict[str, tuple[str, list[str]]]
    ) -> tuple[dict[str, Path], dict[str, str]]:
        """Run (`step`) original, retrain, each method and the evaluation of one seed and
        scenario: their run folders by name, and the methods that failed with the reason."""
        request = [*SCENARIOS[scenario], "--data.init_args.seed", str(seed)]
        original = self.step(
            # Without the request: one original model per seed serves every scenario.
            "fit",
            "original.yaml",
            f"s{seed}-original",
            ["--seed_everything", str(seed), *self.training],
        )
        retrain = self.step(
            "fit",
            "retrain.yaml",
            f"s{seed}-{scenario}-retrain",
            [
                "--seed_everything",
                str(seed),
                *request,
                "--data.init_args.split_manifest",
                "null",
                *self.training,
            ],
        )
        manifest = ["--data.init_args.split_manifest", str(retrain / "split.json")]
        checkpoints = {
            "original": original / "checkpoints/model.ckpt",
            "retrain": retrain / "checkpoints/model.ckpt",
        }
        failed: dict[str, str] = {}
        for name, (config, overrides) in methods.items():
            try:
                run = self.step(
                    "fit",
                    config,
                    f"s{seed}-{scenario}-{name}",
                    [
                        *request,
                        *manifest,
                        "--model.init_args.original_ckpt",
                        str(checkpoints["original"]),
                        *overrides,
                    ],
                )
            except StepFailed as error:
                print(f"  {name} FAILED: {error}", flush=True)
                failed[name] = str(error)
                continue
            checkpoints[name] = run / "checkpoints/model.ckpt"
        listing = "{" + ", ".join(f"{k}: {v}" for k, v in checkpoints.items()) + "}"
        evaluation = self.step(
            "test",
            "evaluate.yaml",
            f"s{seed}-{scenario}-evaluate",
            [
                *request,
                *manifest,
                "--model.init_args.checkpoints",
                listing,
                "--model.init_args.retrain",
                "retrain",
            ],
        )
        runs = {name: path.parents[1] for name, path in checkpoints.items()}
        return {**runs, "evaluate": evaluation}, failed


def step_record(run_dir: Path) -> dict[str, Any]:
    """A step's run folder name, configuration digest and commit (`STEP_RECORD`)."""
    path = run_dir / STEP_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "run": run_dir.name,
        "config_digest": record.get("config_digest"),
        "commit": record.get("commit"),
    }


def planned_steps(scenarios: int, seeds: int, methods: int) -> int:
    """The steps `Harness.seed_run` makes for every scenario and seed: the original model (a
    cache hit after the first scenario), retraining, each method and the evaluation."""
    return scenarios * seeds * (methods + 3)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and std of the finite values; the std is NaN (not 0) for a single value."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def aggregate(
    per_seed: list[dict[str, Any]], names: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over seeds of every metric, gap and time, per model, in ``names`` order."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:
        present = [summary for summary in per_seed if name in summary["models"]]
        rows = [summary["models"][name] for summary in present]
        retrain_rows = [summary["models"][summary["retrain"]] for summary in present]
        columns = {metric: [r["metrics"][metric] for r in rows] for metric in METRICS}
        for gap in ("avg_gap", "avg_gap_without_mia"):
            columns[gap] = [r["gap_to_retrain"][gap] for r in rows]
        seconds = [(r.get("timing") or {}).get("fit_seconds") for r in rows]
        columns["fit_seconds"] = seconds
        retrain_seconds = [(r.get("timing") or {}).get("fit_seconds") for r in retrain_rows]
        columns["speedup_vs_retrain"] = [
            rs / s if s and rs else float("nan")
            for s, rs in zip(seconds, retrain_seconds, strict=True)
        ]
        columns["peak_host_mib"] = [(r.get("timing") or {}).get("peak_host_mib") for r in rows]
        table[name] = {key: _mean_std(values) for key, values in columns.items()}
        failures = len(per_seed) - len(present)
        table[name]["failed_seeds"] = (float(failures), math.nan)
    return table


def markdown(dataset: str, scenario: str, seeds: list[int], table: dict, isolate: bool) -> str:
    header = [
        "model",
        "forget acc",
        "retain acc",
        "test acc",
        "target-class test acc",
        "MIA-efficacy (SVC)",
        "SVC attack acc",
        "MIA-efficacy (LiRA)",
        "LiRA attack acc",
        "linear-probe forget acc",
        "relearn steps",
        "avg gap ↓",
        "avg gap without MIA",
        "fit time (s)",
        "speed-up vs retrain",
    ]
    keys = [
        "forget_acc",
        "retain_acc",
        "test_acc",
        "target_class_test_acc",
        "mia_svc",
        "mia_svc_attack_acc",
        "mia_lira",
        "mia_lira_attack_acc",
        "linear_probe_forget_acc",
        "relearn_steps",
        "avg_gap",
        "avg_gap_without_mia",
        "fit_seconds",
        "speedup_vs_retrain",
    ]
    if isolate:
        header.append("peak host MiB")
        keys.append("peak_host_mib")
    lines = [
        f"### {dataset} — {scenario} "
        + (f"(mean ± std over seeds {seeds})" if len(seeds) > 1 else f"(seed {seeds[0]})"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    wide = ("fit_seconds", "speedup_vs_retrain", "peak_host_mib", "relearn_steps")
    for name, row in table.items():
        failures = int(row.get("failed_seeds", (0.0, math.nan))[0])
        label = name if not failures else f"{name} (failed on {failures} of {len(seeds)} seeds)"
        cells = [label]
        for key in keys:
            mean, std = row[key]
            digits = 1 if key in wide else 3
            if math.isnan(mean):
                cells.append("failed" if failures == len(seeds) else "–")
            elif math.isnan(std):
                cells.append(f"{mean:.{digits}f}")
            else:
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def selection_markdown(
    dataset: str, scenarios: list[str], seeds: list[int], selection: dict[str, Any]
) -> str:
    lines = [
        f"### {dataset} — selection (mean avg gap over seeds {seeds} × scenarios {scenarios})",
        "",
        "Never reported: these seeds serve only to choose each method's values.",
        "",
        "| method | grid point | mean avg gap | chosen |",
        "|---|---|---|---|",
    ]
    for method, result in selection.items():
        for name, entry in result["points"].items():
            gap = entry["mean_avg_gap"]
            shown = "failed" if gap is None else f"{gap:.4f}"
            point = ", ".join(f"{k}={cli_value(v)}" for k, v in entry["values"].items())
            lines.append(
                f"| {method} | {point} | {shown} | {'✓' if name == result['chosen'] else ''} |"
            )
    failed = [method for method, result in selection.items() if result["chosen"] is None]
    if failed:
        lines += [
            "",
            f"Every grid point failed on at least one selection run for {', '.join(failed)}: "
            "reported as shipped.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ps-lightning bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="the configs folder configs/<dataset>/ to run (default: digits)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="report seeds: each trains its original model (seed_everything) and draws the "
        "requests (default: 0 1 2 3 4)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=list(SCENARIOS),
        choices=list(SCENARIOS),
        help="request kinds: subclass (10%% of class 1), random (10%% of the training set), "
        "wholeclass (all of class 1); default: all three",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"methods beside original and retrain, from {', '.join(METHOD_CONFIGS)} "
        "(default: all; ps_paper only where the paper has values for the dataset)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra method: name=ps.yaml:key=value,key=value (model init args); repeatable",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs/bench"),
        help="where every step's run folder goes, <runs-dir>/<dataset>/<step>-<hash>/, the "
        "cache a resumed benchmark reuses (default: runs/bench)",
    )
    parser.add_argument(
        "--configs",
        type=Path,
        default=REPOSITORY_CONFIGS,
        help="the folder of the datasets' configs (default: the repository's, beside the package)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the tables go: <out>/<dataset>-<scenario>.{md,json} and, with --grid, "
        "<out>/<dataset>-selection.{md,json} (default: <runs-dir>/results)",
    )
    out.add_argument(
        "--update-results",
        action="store_true",
        help=f"write the tables into the repository's committed {REPOSITORY_RESULTS} instead "
        "(what `make bench` does), replacing the tables there",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other methods' rows of the existing tables (same seeds; their original "
        "and retrained models must score exactly as this run's) beside this run's",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each step in its own process (needed for peak-memory figures)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epochs of original and retrain training (their cosine T_max follows)",
    )
    parser.add_argument(
        "--architecture",
        choices=sorted(ARCHITECTURES),
        default=None,
        help="train the original and retrain models with this network instead of the config's "
        "(e.g. ResNet18 for the SalUn / l1-sparse CIFAR-10 setting)",
    )
    parser.add_argument(
        "--grid",
        type=Path,
        default=None,
        help="YAML {method: {model_init_arg: [values]}}: select each method's values first",
    )
    parser.add_argument(
        "--select-seeds",
        type=int,
        nargs="+",
        default=[],
        help="seeds of the selection (never reported); needs --grid, disjoint from --seeds",
    )
    parser.add_argument(
        "--select-methods",
        nargs="+",
        default=None,
        help="with --grid: select only these methods (the others run as shipped) and keep the "
        "other methods' entries of an existing selection table of the same seeds and scenarios",
    )
    parser.add_argument(
        "--trainer-arg",
        action="append",
        default=[],
        help="extra CLI argument for every step, e.g. --trainer-arg=--trainer.accelerator=gpu",
    )
    args = parser.parse_args(argv)
    offered = method_configs(args.dataset)
    args.methods = list(offered) if args.methods is None else args.methods
    unknown = [m for m in args.methods if m not in offered]
    if unknown:
        parser.error(
            f"unknown methods {unknown} for {args.dataset!r}; known: {sorted(offered)} (or use "
            "--variant; ps_paper needs the paper's values for the dataset, PAPER_PS_SCHEDULE)"
        )
    if (args.grid is None) != (not args.select_seeds):
        parser.error("--grid and --select-seeds go together.")
    if args.grid is not None and not args.grid.is_file():
        parser.error(f"grid file '{args.grid}' not found (see benchmarks/grids/).")
    if set(args.select_seeds) & set(args.seeds):
        parser.error(
            f"selection seeds {args.select_seeds} overlap the report seeds {args.seeds}: a "
            "reported result must not come from the seeds its values were chosen on."
        )
    methods = {m: offered[m] for m in args.methods}
    methods.update(parse_variant(v) for v in args.variant)
    if not (args.configs / args.dataset).is_dir():
        parser.error(
            f"no configs for {args.dataset!r} under '{args.configs}': pass --configs "
            "<repository>/configs (an installed package has no configs beside it)."
        )
    if args.update_results and not REPOSITORY_RESULTS.parent.is_dir():
        parser.error(
            f"--update-results: no committed tables at '{REPOSITORY_RESULTS}' (an installed "
            "package has no benchmarks/ beside it); pass --out <repository>/benchmarks/results."
        )
    if args.out is None:
        args.out = REPOSITORY_RESULTS if args.update_results else args.runs_dir / "results"
    grid = read_grid(args.grid, methods) if args.grid is not None else {}
    if args.select_methods is not None:
        if args.grid is None or not set(args.select_methods) <= set(grid):
            parser.error(
                f"--select-methods {args.select_methods}: needs --grid, and names methods of "
                f"the grid that are benchmarked ({sorted(grid)})."
            )
        grid = {method: grid[method] for method in args.select_methods}
    if args.grid is not None and not grid:
        parser.error(f"grid file '{args.grid}' has no point for the methods {sorted(methods)}.")
    harness = Harness(
        args.dataset,
        args.runs_dir,
        args.isolate,
        args.trainer_arg,
        args.max_epochs,
        args.configs,
        args.architecture,
    )
    harness.progress = StepProgress(
        planned_steps(len(args.scenarios), len(args.seeds), len(methods))
        + planned_steps(
            len(args.scenarios),
            len(args.select_seeds),
            sum(len(points) for points in grid.values()),
        )
    )
    started = time.perf_counter()
    if args.grid is not None:
        methods = run_selection(harness, args, methods, grid, started)
    for scenario in args.scenarios:
        per_seed = []
        for seed in args.seeds:
            print(
                f"[{args.dataset} {scenario}] seed {seed} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            per_seed.append(harness.seed_run(seed, scenario, methods))
        stem = args.out / f"{args.dataset}-{scenario}"
        entries = {
            name: {"config": config, "overrides": overrides}
            for name, (config, overrides) in methods.items()
        }
        if args.merge:
            per_seed, entries = merge_rows(stem.with_suffix(".json"), args.seeds, per_seed, entries)
        table = aggregate(per_seed, ["original", "retrain", *entries])
        text = markdown(args.dataset, scenario, args.seeds, table, args.isolate)
        atomic_write_text(stem.with_suffix(".md"), text)
        atomic_write_json(
            stem.with_suffix(".json"),
            {
                "seeds": args.seeds,
                "commit": source_commit(),
                "harness": harness.settings(),
                "methods": entries,
                "table": table,
                "per_seed": per_seed,
            },
        )
        print(text, flush=True)
    print(f"tables written to {args.out}", flush=True)


def merge_rows(
    path: Path, seeds: list[int], per_seed: list[dict[str, Any]], entries: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """With ``--merge``: this run's rows beside the other methods' rows of the table at ``path``
    (if any), seed by seed. Refused unless that table has the same seeds and its original and
    retrained models scored exactly as this run's: its rows' gaps were measured against them."""
    if not path.is_file():
        return per_seed, entries
    previous = json.loads(path.read_text())
    if previous["seeds"] != seeds:
        raise ValueError(
            f"--merge: '{path}' holds seeds {previous['seeds']}, this run {seeds}; merge runs "
            "of the same seeds."
        )
    kept = {name: entry for name, entry in previous["methods"].items() if name not in entries}
    merged = []
    for new, old in zip(per_seed, previous["per_seed"], strict=True):
        for reference in ("original", "retrain"):
            if new["models"][reference]["metrics"] != old["models"][reference]["metrics"]:
                raise ValueError(
                    f"--merge: seed {new['seed']}'s {reference} model scores otherwise than the "
                    f"one '{path}' measured its rows against (another thread count or CPU "
                    "trains other weights); run every method instead."
                )
        merged.append(
            {
                **new,
                "models": {
                    **{n: row for n, row in old["models"].items() if n in kept},
                    **new["models"],
                },
                "failed": {
                    **{n: why for n, why in old["failed"].items() if n in kept},
                    **new["failed"],
                },
                "steps": {
                    **{n: step for n, step in old.get("steps", {}).items() if n in kept},
                    **new["steps"],
                },
            }
        )
    return merged, {**kept, **entries}


def kept_selection(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """With ``--select-methods``: the entries of the other methods in the selection table at
    ``path``, when it was made on the same seeds and scenarios (else none)."""
    if args.select_methods is None or not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    if (previous["select_seeds"], previous["scenarios"]) != (args.select_seeds, args.scenarios):
        return {}
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
    candidates: dict[str, tuple[str, list[str]]] = {}
    points: dict[str, dict[str, dict[str, Any]]] = {}
    for method, method_points in grid.items():
        config, overrides = methods[method]
        points[method] = {}
        for point in method_points:
            name = point_name(method, point)
            points[method][name] = point
            candidates[name] = (config, [*overrides, *point_overrides(point)])
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
            "commit": source_commit(),
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
    stem = args.out / f"{args.dataset}-selection"
    selection = kept_selection(stem.with_suffix(".json"), args) | selection
    text = selection_markdown(args.dataset, args.scenarios, args.select_seeds, selection)
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_json(
        stem.with_suffix(".json"),
        {
            "rule": "lowest mean avg_gap over the selection seeds and scenarios",
            "commit": source_commit(),
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


if __name__ == "__main__":
    main()
