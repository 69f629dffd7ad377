"""Method block against retraining on a whole-class request, side by side (Fashion-MNIST).

    .venv/bin/python benchmarks/block_speed.py --original RUN_DIR --data-dir DATA [--rounds 2]

``RUN_DIR`` is a finished Fashion-MNIST original run (``checkpoints/model.ckpt``, ``split.json``).
The request is the whole of class 1 (6,000 samples; 54,000 kept). Measured in interleaved
rounds, one thread unless ``--threads`` says otherwise, each step through the product's CLI
(`run_step`) with its fit time as the run's ``timing.json`` records it (the tables' fit-time
column):
- **retrain**: ``configs/fashion_mnist/retrain.yaml`` on the retain set;
- **block, shipped**: ``configs/fashion_mnist/ps.yaml`` (``auto`` runs the block on a whole
  class): batches of 1,024 at lr 0.016, the stop judged on 10,000 retain samples;
- **block, earlier settings**: the same with the values shipped before them (the datamodule's
  batches of 256 at lr 2e-3, the stop judged on every retain sample);
- **the trunk's pass over the retain set**, in this process: in the loader's batches of 1,024
  (how every feature pass ran before `cpu_feature_pass`), through `cpu_feature_pass` with
  pieces and channels-last alone (its first version) and as it ships (few-channel poolings as
  window maxima, BatchNorms folded).

Ratios last: shipped block / retrain (the issue's target: at most 5%), earlier / shipped block,
and the passes before / now.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import common
import torch

from ps_lightning.data import FashionMNISTDataModule
from ps_lightning.harness.methods import SCENARIOS
from ps_lightning.models import device_speed
from ps_lightning.models.classifier import load_classifier
from ps_lightning.models.device_speed import cpu_feature_pass
from ps_lightning.models.last_block import split_last_block
from ps_lightning.steps import run_step

WHOLE_CLASS = ["--data.init_args.split_manifest", "null", *SCENARIOS["wholeclass"]]
EARLIER_BLOCK = [
    "--model.init_args.block_batch_size=null",
    "--model.init_args.block_lr=0.002",
    "--model.init_args.block_stop_rows=null",
]


def fit_seconds(config: str, run: str, runs: Path, original: Path, extra: list[str]) -> float:
    """One CLI step's fit time, as its run folder records it."""
    args = common.step_args(common.CONFIGS / "fashion_mnist" / config, run, runs, original)
    run_step(["fit", *args, *WHOLE_CLASS, *extra])
    timing = json.loads((runs / "fashion_mnist" / run / "timing.json").read_text())
    return float(timing["fit_seconds"])


def trunk_pass_seconds(original: Path, data_dir: str) -> dict[str, float]:
    """The trunk's pass over the retain set, each the best of two: in the loader's batches of
    1,024 (how every feature pass ran before `cpu_feature_pass`), through `cpu_feature_pass`
    with pieces and channels-last alone (its first version), and through it as it ships."""
    data = FashionMNISTDataModule(
        data_dir=data_dir, download=False, forget="classes", forget_classes=[1], forget_ratio=1.0
    )
    data.prepare_data()
    data.setup("fit")
    net = load_classifier(str(original / "checkpoints" / "model.ckpt"))[0].net.eval()
    trunk, _ = split_last_block(net)
    loader = data.eval_dataloader("retain")
    shipped = device_speed._inference_forwards

    def one_pass(device: str, layer_forwards: bool) -> float:
        # "meta" passes the loader's batches through the network as the checkpoint lays it out.
        device_speed._inference_forwards = shipped if layer_forwards else lambda network: {}
        started = time.perf_counter()
        try:
            with torch.no_grad(), cpu_feature_pass(net, trunk, torch.device(device)) as forward:
                for images, _ in loader:
                    forward(data.model_input(images))
        finally:
            device_speed._inference_forwards = shipped
        return time.perf_counter() - started

    ways = {"batches": ("meta", False), "first": ("cpu", False), "now": ("cpu", True)}
    return {name: min(one_pass(*way) for _ in range(2)) for name, way in ways.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="a Fashion-MNIST original run")
    parser.add_argument("--data-dir", default="data", help="the folder holding FashionMNIST/raw")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    common.set_threads(args.threads)
    common.quiet_lightning()
    common.header("method block vs retrain, Fashion-MNIST whole class 1", args.threads)
    data = [f"--data.init_args.data_dir={args.data_dir}"]
    times: dict[str, list[float]] = {"retrain": [], "block": [], "block_earlier": []}
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        for round_ in range(args.rounds):
            for name, config, extra in (
                ("retrain", "retrain.yaml", data),
                ("block", "ps.yaml", data),
                ("block_earlier", "ps.yaml", [*data, *EARLIER_BLOCK]),
            ):
                seconds = fit_seconds(config, f"{name}-{round_}", runs, args.original, extra)
                times[name].append(seconds)
                print(f"round {round_}: {name:14s} fit {seconds:7.2f} s", flush=True)
    passes = trunk_pass_seconds(args.original, args.data_dir)
    print(
        f"trunk pass over 54,000 retain images: batches of 1,024 {passes['batches']:.2f} s, "
        f"pieces and channels-last {passes['first']:.2f} s, "
        f"cpu_feature_pass as shipped {passes['now']:.2f} s"
    )
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"\nmedians: retrain {median['retrain']:.1f} s, block {median['block']:.2f} s, "
        f"block with the earlier settings {median['block_earlier']:.2f} s"
    )
    print(f"ratio block / retrain: {median['block'] / median['retrain']:.1%} (target <= 5%)")
    print(
        f"ratio earlier settings / shipped block: {median['block_earlier'] / median['block']:.2f}"
    )
    print(
        f"ratio trunk pass batches / now: {passes['batches'] / passes['now']:.2f}, "
        f"first cpu_feature_pass / now: {passes['first'] / passes['now']:.2f}"
    )


if __name__ == "__main__":
    main()
