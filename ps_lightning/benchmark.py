"""The benchmark harness: every method on the same splits, the same original models, several
seeds, side by side with retraining.

    python -m ps_lightning.benchmark --dataset digits --seeds 0 1 2 3 4 \
        --scenarios subclass random wholeclass --methods naive_ps ps_paper ps

Per seed it trains one original model (seed_everything = seed), and per scenario a retrained
model on the request's retain set (the request is drawn with the same seed); then each method
unlearns from that original model, and one evaluation scores all of them together. Finished
steps are cached by a hash of their full command line, so an interrupted run resumes.
Results: ``<out>/<dataset>-<scenario>.md`` and ``.json`` with mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ps_lightning.io import atomic_write_json, atomic_write_text

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

# name → (config file of the dataset, overrides). `ps` is the shipped configuration.
METHODS: dict[str, tuple[str, list[str]]] = {
    "naive_ps": ("naive_ps.yaml", []),
    "ps_paper": (
        "ps.yaml",
        [
            "--model.init_args.early_stop",
            "off",
            "--model.init_args.retain_anchor",
            "0",
            "--model.init_args.trainable",
            "bias",
            "--model.init_args.method",
            "ps",
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


class Harness:
    def __init__(self, dataset: str, runs_dir: Path, isolate: bool, extra: list[str]) -> None:
        self.dataset = dataset
        self.configs = Path("configs") / dataset
        self.runs_dir = runs_dir
        self.isolate = isolate
        self.extra = extra

    def step(self, subcommand: str, config: str, run: str, args: list[str]) -> Path:
        """Run one CLI step unless its cached result exists; return its run directory."""
        command = [subcommand, "--config", str(self.configs / config), *args, *self.extra]
        digest = hashlib.sha256(json.dumps(command).encode()).hexdigest()[:12]
        run_dir = self.runs_dir / self.dataset / f"{run}-{digest}"
        done = run_dir / ("metrics.json" if subcommand == "test" else "checkpoints/model.ckpt")
        if done.is_file():
            return run_dir
        if run_dir.exists():  # an interrupted attempt: its files are incomplete
            shutil.rmtree(run_dir)
        command += [
            "--run",
            run_dir.name,
            "--trainer.logger.init_args.save_dir",
            str(self.runs_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
        print(f"  running {run} …", flush=True)
        if self.isolate:
            subprocess.run(
                [sys.executable, "-m", "ps_lightning.cli", *command],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        else:
            from ps_lightning.cli import cli_main

            cli_main(command)
        return run_dir

    def seed_run(
        self, seed: int, scenario: str, methods: dict[str, tuple[str, list[str]]]
    ) -> dict[str, Any]:
        request = [*SCENARIOS[scenario], "--data.init_args.seed", str(seed)]
        original = self.step(
            # Without the request: one original model per seed serves every scenario.
            "fit",
            "original.yaml",
            f"s{seed}-original",
            ["--seed_everything", str(seed)],
        )
        retrain = self.step(
            "fit",
            "retrain.yaml",
            f"s{seed}-{scenario}-retrain",
            ["--seed_everything", str(seed), *request, "--data.init_args.split_manifest", "null"],
        )
        manifest = ["--data.init_args.split_manifest", str(retrain / "split.json")]
        checkpoints = {
            "original": original / "checkpoints/model.ckpt",
            "retrain": retrain / "checkpoints/model.ckpt",
        }
        for name, (config, overrides) in methods.items():
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
        return json.loads((evaluation / "metrics.json").read_text())


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(
    per_seed: list[dict[str, Any]], names: list[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over seeds of every metric, gap and time, per model, in ``names`` order."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:
        rows = [summary["models"][name] for summary in per_seed]
        retrain_rows = [summary["models"][summary["retrain"]] for summary in per_seed]
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
        f"### {dataset} — {scenario} (mean ± std over seeds {seeds})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in table.items():
        cells = [name]
        for key in keys:
            mean, std = row[key]
            wide = ("fit_seconds", "speedup_vs_retrain", "peak_host_mib", "relearn_steps")
            digits = 1 if key in wide else 3
            cells.append("–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra method: name=ps.yaml:key=value,key=value (model init args)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="run each step in its own process (needed for peak-memory figures)",
    )
    parser.add_argument(
        "--trainer-arg",
        action="append",
        default=[],
        help="extra CLI argument for every step, e.g. --trainer-arg=--trainer.accelerator=gpu",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {sorted(METHODS)} (or use --variant)")
    methods = {m: METHODS[m] for m in args.methods}
    methods.update(parse_variant(v) for v in args.variant)
    harness = Harness(args.dataset, args.runs_dir, args.isolate, args.trainer_arg)
    started = time.perf_counter()
    for scenario in args.scenarios:
        per_seed = []
        for seed in args.seeds:
            print(
                f"[{args.dataset} {scenario}] seed {seed} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            per_seed.append(harness.seed_run(seed, scenario, methods))
        table = aggregate(per_seed, ["original", "retrain", *methods])
        text = markdown(args.dataset, scenario, args.seeds, table, args.isolate)
        stem = args.out / f"{args.dataset}-{scenario}"
        atomic_write_text(stem.with_suffix(".md"), text)
        atomic_write_json(
            stem.with_suffix(".json"),
            {
                "seeds": args.seeds,
                "methods": {
                    name: {"config": config, "overrides": overrides}
                    for name, (config, overrides) in methods.items()
                },
                "table": table,
                "per_seed": per_seed,
            },
        )
        print(text, flush=True)


if __name__ == "__main__":
    main()
