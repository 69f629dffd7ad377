"""Whole unlearning steps against retraining, through the real CLI, side by side.

    python benchmarks/unlearning_vs_retrain.py             # digits + MNIST-shaped (60,000)
    python benchmarks/unlearning_vs_retrain.py --quick     # MNIST-shaped with 20,000 samples

Every step is `ps_lightning.steps.run_step(["fit", "--config", ...])` in this process, with the
shipped configs of configs/<dataset>/ and the paper's request (10% of class 1); "work" is the
wall time of that call: parsing, data loading, model load, feature passes, surgery or
fine-tuning, checkpoint saved. Interpreter + import start-up (`python -c "import
ps_lightning.cli"`, a fresh process) is reported on its own: every step pays it once.

- digits: original and retrain run their full recipe (configs/digits/train/trainer.yaml).
- MNIST-shaped: random uint8 28×28 images and random labels written as the real MNIST idx
  files, read by the real `MNISTDataModule`. Original and retrain run ONE epoch; retrain's
  full recipe is estimated as (work − fit) + recipe_epochs × fit, and printed as such.
- Naive PS runs twice: the first request builds the surgery index (a pass over all N
  training samples), the second reuses it. PS runs with the shipped config (early stop
  `auto`) and with early stop off (all epochs: the worst case).
- CIFAR-10 projection: one ResNet20 training step and forward pass measured here on random
  32×32 images, scaled to 50,000 samples and the recipe's epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import yaml
from common import (
    CONFIGS,
    fmt_seconds,
    header,
    import_seconds,
    median_seconds,
    quiet_lightning,
    set_threads,
    step_args,
    write_fake_mnist,
)

from ps_lightning.models import ResNet20
from ps_lightning.steps import run_step
from ps_lightning.timing import TIMING_NAME

TARGET = 100.0  # each PS step's work must be ≥100× faster than retrain's


class Step(NamedTuple):
    work_s: float  # wall time of cli_main in this process
    fit_s: float  # Trainer.fit alone, from the run's timing.json (RunTimer)
    parse_s: float  # cli_main(run=False): parse, load data and model, build the Trainer (or nan)


def recipe_epochs(dataset: str) -> int:
    trainer = yaml.safe_load((CONFIGS / dataset / "train" / "trainer.yaml").read_text())
    return int(trainer["max_epochs"])


class Runner:
    """Runs CLI steps of one dataset into one runs folder and times them."""

    def __init__(self, dataset: str, runs: Path, extra: list[str]) -> None:
        self.dataset = dataset
        self.runs = runs
        self.extra = extra
        self.original = runs / dataset / "original"

    def step(self, config: str, run: str, *overrides: str, breakdown: bool = False) -> Step:
        config_path = CONFIGS / self.dataset / config
        args = ["fit", *step_args(config_path, run, self.runs, self.original), *self.extra]
        args += list(overrides)
        parse = math.nan
        if breakdown:  # the same call without running fit: the fixed cost of a CLI step
            started = time.perf_counter()
            run_step(args, run=False)
            parse = time.perf_counter() - started
        started = time.perf_counter()
        run_step(args)
        work = time.perf_counter() - started
        timing = json.loads((self.runs / self.dataset / run / TIMING_NAME).read_text())
        return Step(work, float(timing["fit_seconds"]), parse)

    def forget_size(self) -> int:
        manifest = json.loads((self.original / "split.json").read_text())
        return len(manifest["forget_indices"])

    def unlearning_steps(self) -> dict[str, Step]:
        full = ("--model.init_args.early_stop", "off")
        return {
            "naive_ps (builds index)": self.step("naive_ps.yaml", "naive_ps_build"),
            "naive_ps (cached index)": self.step(
                "naive_ps.yaml", "naive_ps_cached", breakdown=True
            ),
            "ps (shipped config)": self.step("ps.yaml", "ps", breakdown=True),
            "ps (early stop off)": self.step("ps.yaml", "ps_all_epochs", *full, breakdown=True),
        }


def print_steps(retrain: Step, retrain_s: float, steps: dict[str, Step]) -> dict[str, float]:
    """One row per step; `parse` is cli_main(run=False), `rest` = work − parse − fit (Trainer
    set-up and teardown, config.yaml, result checkpoint, figures)."""
    print(
        f"{'step':<26}{'work':>10}{'parse':>10}{'fit':>10}{'rest':>10}"
        f"{'retrain/work':>14}{'retrain/fit':>13}"
    )
    ratios = {}
    retrain_fit = retrain_s - (retrain.work_s - retrain.fit_s)
    for name, step in steps.items():
        ratios[name] = retrain_s / step.work_s
        rest = step.work_s - step.fit_s - (0.0 if math.isnan(step.parse_s) else step.parse_s)
        parse = "-" if math.isnan(step.parse_s) else fmt_seconds(step.parse_s)
        rest_text = fmt_seconds(rest) if not math.isnan(step.parse_s) else "-"
        print(
            f"{name:<26}{fmt_seconds(step.work_s):>10}{parse:>10}{fmt_seconds(step.fit_s):>10}"
            f"{rest_text:>10}{ratios[name]:>13,.0f}×{retrain_fit / step.fit_s:>12,.0f}×"
        )
    return ratios


def digits(runs: Path) -> tuple[float, dict[str, Step], dict[str, float]]:
    print("\n## digits (1,437 train samples, LeNet5), full recipes")
    runner = Runner("digits", runs, [])
    original = runner.step("original.yaml", "original")
    retrain = runner.step("retrain.yaml", "retrain")
    print(f"forget set: {runner.forget_size()} samples; recipe {recipe_epochs('digits')} epochs")
    print(f"original  work {fmt_seconds(original.work_s)} (fit {fmt_seconds(original.fit_s)})")
    print(f"retrain   work {fmt_seconds(retrain.work_s)} (fit {fmt_seconds(retrain.fit_s)})")
    steps = runner.unlearning_steps()
    return retrain.work_s, steps, print_steps(retrain, retrain.work_s, steps)


def mnist(runs: Path, data_dir: Path, n_train: int) -> tuple[float, dict[str, Step], dict]:
    print(f"\n## MNIST-shaped ({n_train:,} random 28×28 uint8 samples as idx files, LeNet5)")
    started = time.perf_counter()
    write_fake_mnist(data_dir, n_train, 10_000, seed=209)
    print(f"idx files written in {fmt_seconds(time.perf_counter() - started)} (not counted)")
    epochs = recipe_epochs("mnist")
    one_epoch = ("--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1")
    # The files are there: download stays off (with it on, the module loads the data twice).
    extra = ["--data.init_args.data_dir", str(data_dir), "--data.init_args.download", "false"]
    runner = Runner("mnist", runs, extra)
    original = runner.step("original.yaml", "original", *one_epoch)
    retrain = runner.step("retrain.yaml", "retrain", *one_epoch)
    retrain_s = (retrain.work_s - retrain.fit_s) + epochs * retrain.fit_s
    print(f"forget set: {runner.forget_size()} samples")
    print(
        f"original  1 epoch: work {fmt_seconds(original.work_s)} "
        f"(fit {fmt_seconds(original.fit_s)})"
    )
    print(
        f"retrain   1 epoch: work {fmt_seconds(retrain.work_s)} "
        f"(fit {fmt_seconds(retrain.fit_s)}) -> recipe of {epochs} epochs ESTIMATED "
        f"{fmt_seconds(retrain_s)} = (work − fit) + {epochs} × fit"
    )
    steps = runner.unlearning_steps()
    return retrain_s, steps, print_steps(retrain, retrain_s, steps)


def cifar10_projection(naive_cached_s: float, ps_s: float, ps_epochs: int) -> dict[str, float]:
    """Retrain vs PS at CIFAR-10 scale from measured ResNet20 costs (random 32×32 images)."""
    print("\n## CIFAR-10 projection (ResNet20, 50,000 train samples)")
    torch.manual_seed(0)
    model = ResNet20()
    images = torch.randn(128, 3, 32, 32)
    labels = torch.randint(0, 10, (128,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def train_step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    step_s, _ = median_seconds(train_step, repeats=5, warmup=1)
    model.eval()
    batch = torch.randn(512, 3, 32, 32)

    def forward() -> None:
        with torch.no_grad():
            model.forward_features(batch)

    forward_s, _ = median_seconds(forward, repeats=3, warmup=1)
    per_sample = forward_s / len(batch)
    epochs = recipe_epochs("cifar10")
    config = yaml.safe_load((CONFIGS / "cifar10" / "ps.yaml").read_text())
    cifar_ps_epochs = int(config["model"]["init_args"]["epochs"])
    forget, retain_val, calibration = 500, 2_000, 5_000  # 10% of class 1; defaults
    epoch_s = math.ceil(50_000 / 128) * step_s + (forget + retain_val + 5_000) * per_sample
    retrain_s = epochs * epoch_s
    # Conservative: the whole measured MNIST-shaped step scaled to CIFAR's PS epochs, plus
    # ResNet20 passes over every split PS extracts (forget, retain anchor, calibration).
    naive_s = naive_cached_s + forget * per_sample
    naive_build_s = naive_s + 50_000 * per_sample
    ps_cifar_s = ps_s * max(1.0, cifar_ps_epochs / ps_epochs)
    ps_cifar_s += (forget + retain_val + calibration) * per_sample
    print(
        f"measured: train step (batch 128) {fmt_seconds(step_s)}, forward "
        f"{fmt_seconds(per_sample * 1000)} per 1,000 images"
    )
    print(
        f"ESTIMATED epoch {fmt_seconds(epoch_s)} -> retrain ({epochs} epochs) "
        f"{fmt_seconds(retrain_s)}"
    )
    print(
        f"ESTIMATED naive_ps: first request (index) {fmt_seconds(naive_build_s)}, "
        f"cached {fmt_seconds(naive_s)}; ps ({cifar_ps_epochs} epochs) {fmt_seconds(ps_cifar_s)}"
    )
    return {
        "naive_ps (builds index)": retrain_s / naive_build_s,
        "naive_ps (cached index)": retrain_s / naive_s,
        "ps (early stop off)": retrain_s / ps_cifar_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="MNIST-shaped with 20,000 samples")
    parser.add_argument("--mnist-n", type=int, default=None, help="MNIST-shaped train size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    n_train = args.mnist_n or (20_000 if args.quick else 60_000)
    header("Unlearning steps vs retraining, through ps_lightning.cli.cli_main", args.threads)
    startup_s = import_seconds("ps_lightning.cli")
    print(
        f"start-up (fresh `python -c 'import ps_lightning.cli'`): {fmt_seconds(startup_s)} "
        "per process, not included in any 'work' below"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path.cwd()
        os.chdir(tmp)  # Lightning and the CLI write nothing into the repository
        try:
            runs = Path(tmp) / "runs"
            digits_retrain, _, digits_ratios = digits(runs)
            mnist_retrain, mnist_steps, mnist_ratios = mnist(runs, Path(tmp) / "data", n_train)
        finally:
            os.chdir(cwd)
    ps_epochs = int(
        yaml.safe_load((CONFIGS / "mnist" / "ps.yaml").read_text())["model"]["init_args"]["epochs"]
    )
    cifar_ratios = cifar10_projection(
        mnist_steps["naive_ps (cached index)"].work_s,
        mnist_steps["ps (early stop off)"].work_s,
        ps_epochs,
    )

    print("\n## ratios: retrain work / unlearning step work (target ≥100×)")
    for label, ratios in (
        ("digits", digits_ratios),
        (f"MNIST-shaped N={n_train:,} (retrain estimated)", mnist_ratios),
        ("CIFAR-10 (projected)", cifar_ratios),
    ):
        parts = [
            f"{name} {ratio:,.0f}×{'' if ratio >= TARGET else ' MISSED'}"
            for name, ratio in ratios.items()
        ]
        print(f"{label}: " + "; ".join(parts))
    print(
        f"(digits retrain {fmt_seconds(digits_retrain)}, MNIST-shaped retrain "
        f"{fmt_seconds(mnist_retrain)}; start-up {fmt_seconds(startup_s)} on top of each)"
    )


if __name__ == "__main__":
    main()
