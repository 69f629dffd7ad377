"""The benchmark harness: every method on the same splits, the same original models, several
seeds, side by side with retraining.

    ps-lightning bench --dataset digits --seeds 0 1 2 3 4 \
        --scenarios subclass random wholeclass --methods naive_ps ps_paper ps

Per seed it trains one original model (seed_everything = seed), and per scenario a retrained model
on the request's retain set (the request is drawn with the same seed); then each method unlearns
from that original model, and one evaluation scores all of them together. Finished steps are cached
by a hash of their resolved configuration, so an interrupted run resumes and a config edit re-runs
what it touches. A method that refuses a request (Naive PS on ``wholeclass``) is recorded as failed
with its one-line reason, and the others go on. Each step prints a line with the steps done out of
all planned, the time elapsed and the ETA. The configs are ``<configs>/<dataset>/*.yaml``:
``--configs`` defaults to ``configs`` of the working directory (run from the repository root).
Results: ``<out>/<dataset>-<scenario>.md`` and ``.json`` with mean ± std over seeds; ``<out>`` is
``<runs-dir>/results`` unless ``--out`` names another folder (``make bench`` passes ``--out
benchmarks/results``, the repository's committed tables).

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
import json
import textwrap
import time
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from ps_lightning.console import StepProgress
from ps_lightning.files import atomic_write_json, atomic_write_text
from ps_lightning.harness.chain import Harness, planned_steps
from ps_lightning.harness.methods import METHOD_CONFIGS, SCENARIOS, method_configs, parse_variant
from ps_lightning.harness.selection import read_grid, run_selection
from ps_lightning.harness.tables import aggregate, markdown, merge_rows
from ps_lightning.models import ARCHITECTURES

Methods = dict[str, tuple[str, list[str]]]


# The options that name a folder or file: parsed as text (the help then says `type: str`, not
# a class's repr) and made paths once parsed.
PATH_OPTIONS = ("runs_dir", "configs", "out", "grid")


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """LightningCLI's help (each option's type and default, `--config`, `--print_config`)
    under the harness's description as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never inside a flag or a folder name (argparse would cut `--trainer-arg` at its dash).
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def bench_parser() -> ArgumentParser:
    """The options of ``ps-lightning bench``, parsed as LightningCLI parses the steps' (by
    jsonargparse): the same help, and every option also from a YAML file (``--config``)."""
    parser = ArgumentParser(
        prog="ps-lightning bench",
        description=__doc__,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options, each under its name with underscores "
        "(runs_dir: ..., max_epochs: ...); options given after it override it",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="the configs folder CONFIGS/<dataset>/ to run",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="report seeds: each trains its original model (seed_everything) and draws the "
        "requests",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=list(SCENARIOS),
        choices=list(SCENARIOS),
        help="request kinds: subclass (10% of class 1), random (10% of the training set), "
        "wholeclass (all of class 1)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"methods beside original and retrain, from {', '.join(METHOD_CONFIGS)} "
        "(null: all; ps_paper only where the paper has values for the dataset)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra method: name=ps.yaml:key=value,key=value (model init args); repeatable",
    )
    parser.add_argument(
        "--runs-dir",
        type=str,
        default="runs/bench",
        help="where every step's run folder goes, RUNS_DIR/<dataset>/<step>-<hash>/, the "
        "cache a resumed benchmark reuses",
    )
    parser.add_argument(
        "--configs",
        type=str,
        default="configs",
        help="the folder of the datasets' configs, CONFIGS/<dataset>/*.yaml (by default the "
        "one in the working directory: run from the repository root)",
    )
    parser.add_argument(
        "--out",
        type=str,
        default=None,
        help="where the tables go, replacing those there: OUT/<dataset>-<scenario>.{md,json} "
        "and, with --grid, OUT/<dataset>-selection.{md,json} (null: RUNS_DIR/results; "
        "make bench passes benchmarks/results, the committed tables)",
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
        choices=sorted(name for name, cls in ARCHITECTURES.items() if cls.rebuilt_by_name),
        default=None,
        help="train the original and retrain models with this network instead of the config's "
        "(e.g. ResNet18 for the SalUn / l1-sparse CIFAR-10 setting)",
    )
    parser.add_argument(
        "--grid",
        type=str,
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
    parser.add_argument(
        "--training-arg",
        action="append",
        default=[],
        help="extra CLI argument for original and retrain training only, e.g. "
        "--training-arg=--trainer.precision=bf16-mixed (the methods and the evaluation run as "
        "configured)",
    )
    parser.add_argument(
        "--method-arg",
        action="append",
        default=[],
        help="METHOD:ARG, an extra CLI argument for that method's steps only, e.g. "
        "--method-arg=finetune:--trainer.precision=bf16-mixed (repeatable)",
    )
    return parser


def method_arguments(
    parser: ArgumentParser, given: list[str], methods: Methods
) -> dict[str, list[str]]:
    """``--method-arg METHOD:ARG`` values as each method's extra arguments, in their order; a
    method this run does not run, a value without ``:`` or an argument other than the
    Trainer's is the parser's error (a method's own values are its config's, or a variant's:
    a committed row must run what ships)."""
    extra: dict[str, list[str]] = {}
    for text in given:
        name, colon, argument = text.partition(":")
        if not colon or not argument:
            parser.error(
                f"--method-arg {text!r}: expected METHOD:ARG, e.g. "
                "finetune:--trainer.precision=bf16-mixed"
            )
        if name not in methods:
            parser.error(
                f"--method-arg {text!r}: {name!r} is not among this run's methods {sorted(methods)}"
            )
        if not argument.startswith("--trainer."):
            parser.error(
                f"--method-arg {text!r}: only the Trainer's arguments (--trainer.*) are a "
                "method's run settings; change its values with --variant or its config."
            )
        extra.setdefault(name, []).append(argument)
    return extra


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Methods, dict[str, list[dict]]]:
    """The command's arguments, every method it runs and the grid of the methods it selects;
    an option that cannot run exits with the parser's error before any step."""
    parser = bench_parser()
    parsed = parser.parse_args(argv).as_dict()
    parsed.pop("config", None)  # the files read, already applied
    for name in PATH_OPTIONS:
        parsed[name] = None if parsed[name] is None else Path(parsed[name])
    # What the harness reads is a plain argparse namespace, however the options were given.
    args = argparse.Namespace(**parsed)
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
    args.method_arg = method_arguments(parser, args.method_arg, methods)
    if not args.configs.is_dir():
        parser.error(
            f"no configs folder '{args.configs}': run from the repository root or pass --configs."
        )
    if not (args.configs / args.dataset).is_dir():
        parser.error(
            f"no configs for {args.dataset!r} under '{args.configs}': pass --configs with the "
            "folder of the datasets' configs."
        )
    if args.out is None:
        args.out = args.runs_dir / "results"
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
    return args, methods, grid


def report(harness: Harness, args: argparse.Namespace, methods: Methods, started: float) -> None:
    """Run ``methods`` on the report seeds in every scenario, and write each scenario's table."""
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
        settings = harness.settings()
        if args.merge:
            path = stem.with_suffix(".json")
            earlier = json.loads(path.read_text())["harness"] if path.is_file() else {}
            per_seed, entries = merge_rows(path, args.seeds, per_seed, entries)
            # The kept rows' own method arguments, so that their steps plan again as they ran.
            settings["method_extra"] = {
                **{
                    name: extra
                    for name, extra in earlier.get("method_extra", {}).items()
                    if name in entries and name not in methods
                },
                **harness.method_extra,
            }
        table = aggregate(per_seed, ["original", "retrain", *entries])
        text = markdown(
            args.dataset, scenario, args.seeds, table, args.isolate, settings["method_extra"]
        )
        atomic_write_text(stem.with_suffix(".md"), text)
        atomic_write_json(
            stem.with_suffix(".json"),
            {
                "seeds": args.seeds,
                "commit": harness.commit,
                "harness": settings,
                "methods": entries,
                "table": table,
                "per_seed": per_seed,
            },
        )
        print(text, flush=True)
    print(f"tables written to {args.out}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """``ps-lightning bench ARGS`` (``argv``, or this process's own arguments when ``None``):
    the selection first where a grid is given, then the report seeds' tables."""
    args, methods, grid = parse(argv)
    harness = Harness(
        args.dataset,
        args.runs_dir,
        args.isolate,
        args.trainer_arg,
        args.max_epochs,
        args.configs,
        args.architecture,
        args.training_arg,
        args.method_arg,
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
    report(harness, args, methods, started)


if __name__ == "__main__":
    main()
