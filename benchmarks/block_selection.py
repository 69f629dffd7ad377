"""How method block's settings were chosen: the last block of a LeNet5 retrained on cached
block inputs, on the Fashion-MNIST selection seeds' original and retrained models.

    .venv/bin/python benchmarks/block_selection.py --runs <bench runs>/fashion_mnist \\
        --kinds random,wholeclass,subclass --seeds 0,1,2 [--variants shipped,epochs20,...]

``--runs`` is a `ps-lightning bench` runs folder holding ``s<seed>-original-*`` and
``s<seed>-<kind>-retrain-*`` for those seeds (``make bench DATASET=fashion_mnist SELECT=1``
makes them). The algorithm is `ps_lightning.prototype_surgery.block_retrain`'s, run here
without Lightning so that a dozen settings take minutes: every variant starts from the
original, draws the block afresh, trains it on the retain set and stops at the original's retain
accuracy; the row's avg gap without MIA (forget, retain, test accuracy) is to the retrained
model, and the linear probe is the evaluation's (`linear_probe_accuracy`, 2,000 retain samples
plus the calibration half). ``last_layer`` retrains only the second hidden layer.
"""

from __future__ import annotations

import argparse
import copy
import glob
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from common import set_threads
from torch import nn

from ps_lightning.data import FashionMNISTDataModule
from ps_lightning.evaluation.probes import linear_probe_accuracy
from ps_lightning.metrics import accuracy
from ps_lightning.models.classifier import load_classifier
from ps_lightning.prototype_surgery.block_retrain import block_accuracy, reinitialise
from ps_lightning.prototype_surgery.block_retrain import stop_rows as sample_rows

SPLITS = ("forget", "retain", "test", "calibration")
VARIANTS: dict[str, dict[str, Any]] = {
    # What configs/fashion_mnist/ps.yaml ships.
    "shipped": {"epochs": 10, "lr": 1.6e-2, "batch": 1024, "stop_rows": 10_000},
    # Shipped until 2026-12-05 evening: the datamodule's batches, the stop on every retain row.
    "batch256": {"epochs": 10, "lr": 2e-3, "batch": 256},
    "epochs20": {"epochs": 20, "lr": 2e-3, "batch": 256},
    "lr5e-3": {"epochs": 10, "lr": 5e-3, "batch": 256},
    "batch1024_3": {"epochs": 3, "lr": 4e-3, "batch": 1024},
    "batch1024_5": {"epochs": 5, "lr": 4e-3, "batch": 1024},
    "last_layer": {"epochs": 10, "lr": 2e-3, "batch": 256, "last_layer": True},
    "batch512": {"epochs": 10, "lr": 3e-3, "batch": 512},
    "batch1024": {"epochs": 10, "lr": 4e-3, "batch": 1024},
    "batch1024_lr8e-3": {"epochs": 10, "lr": 8e-3, "batch": 1024},
    "batch1024_lr8e-3_e6": {"epochs": 6, "lr": 8e-3, "batch": 1024},
    "batch1024_lr1.6e-2": {"epochs": 10, "lr": 1.6e-2, "batch": 1024},
    "batch1024_lr8e-3_stop10k": {"epochs": 10, "lr": 8e-3, "batch": 1024, "stop_rows": 10_000},
    "batch2048": {"epochs": 15, "lr": 8e-3, "batch": 2048},
    "half_retain": {"epochs": 10, "lr": 8e-3, "batch": 1024, "fraction": 0.5},
    # Fewer steps for the 5% target (the second selection of 2026-12-05).
    "e8": {"epochs": 8, "lr": 1.6e-2, "batch": 1024, "stop_rows": 10_000},
    "e6": {"epochs": 6, "lr": 1.6e-2, "batch": 1024, "stop_rows": 10_000},
    "e6_lr2.4e-2": {"epochs": 6, "lr": 2.4e-2, "batch": 1024, "stop_rows": 10_000},
}


def datamodule(runs: str, seed: int, kind: str, data_dir: str) -> FashionMNISTDataModule:
    retrain = Path(glob.glob(f"{runs}/s{seed}-{kind}-retrain-*/config.yaml")[0])
    args = yaml.safe_load(retrain.read_text())["data"]["init_args"]
    args.update(data_dir=data_dir, train_on="full", download=False)
    data = FashionMNISTDataModule(**args)
    data.prepare_data()
    data.setup("fit")
    return data


def split(net: nn.Module, last_layer: bool) -> tuple[nn.Module, nn.Module]:
    """(trunk, block) of a LeNet5Net: its own split, or one moved up to the last hidden layer."""
    trunk, block = net.last_block()
    if not last_layer:
        return trunk, block
    return nn.Sequential(trunk, block[:3]), block[3:]


@torch.no_grad()
def block_inputs(trunk: nn.Module, data: FashionMNISTDataModule) -> dict[str, tuple]:
    rows = {}
    for name in SPLITS:
        batches = [(trunk(data.model_input(x)), y) for x, y in data.eval_dataloader(name)]
        xs, ys = zip(*batches, strict=True)
        rows[name] = (torch.cat(xs), torch.cat(ys))
    return rows


def scores(block: nn.Module, head: nn.Module, rows: dict[str, tuple]) -> dict[str, float]:
    block.eval()
    with torch.no_grad():
        result = {s: accuracy(head(block(rows[s][0])), rows[s][1]) for s in SPLITS[:3]}
        features = {s: block(rows[s][0]) for s in ("forget", "retain", "calibration")}
    probe_rows = torch.randperm(len(rows["retain"][1]), generator=torch.Generator().manual_seed(0))
    probe_rows = probe_rows[:2000]
    result["probe"] = linear_probe_accuracy(
        torch.cat([features["retain"][probe_rows], features["calibration"]]),
        torch.cat([rows["retain"][1][probe_rows], rows["calibration"][1]]),
        features["forget"],
        rows["forget"][1],
    )
    return result


def retrain_block(
    block: nn.Module,
    head: nn.Module,
    rows: dict[str, tuple],
    epochs: int,
    lr: float,
    batch: int,
    fraction: float = 1.0,
    stop_rows: int | None = None,
) -> tuple[nn.Module, nn.Module, int]:
    block, head = copy.deepcopy(block), copy.deepcopy(head)
    inputs, labels = rows["retain"]
    if fraction < 1:
        kept = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
        kept = kept[: round(fraction * len(labels))]
        inputs, labels = inputs[kept], labels[kept]
    judged = sample_rows(len(labels), stop_rows, 0)
    target = block_accuracy(block, head, inputs, labels, 4096, judged)
    reinitialise(nn.ModuleList([block, head]), 0)
    params = [*block.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(labels) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    order = torch.Generator().manual_seed(0)
    for epoch in range(epochs):  # noqa: B007 (the epochs run are returned)
        block.train()
        for rows_ in torch.randperm(len(labels), generator=order).split(batch):
            loss = F.cross_entropy(head(block(inputs[rows_])), labels[rows_])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if block_accuracy(block, head, inputs, labels, 4096, judged) >= target:
            break
    return block, head, epoch + 1


def gap(result: dict[str, float], reference: dict[str, float]) -> float:
    return sum(abs(result[k] - reference[k]) for k in ("forget", "retain", "test")) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--kinds", default="random,wholeclass,subclass")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    columns = (
        "request | seed | model | forget | retain | test | probe | gap without MIA | s | epochs"
    )
    print(f"| {columns} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        for seed in map(int, args.seeds.split(",")):
            data = datamodule(args.runs, seed, kind, args.data_dir)
            original, _ = load_classifier(
                glob.glob(f"{args.runs}/s{seed}-original-*")[0] + "/checkpoints/model.ckpt"
            )
            retrain, _ = load_classifier(
                glob.glob(f"{args.runs}/s{seed}-{kind}-retrain-*")[0] + "/checkpoints/model.ckpt"
            )
            reference_rows = block_inputs(split(retrain.net, False)[0], data)
            reference = scores(split(retrain.net, False)[1], retrain.net.fc, reference_rows)
            models = {"retrain": (reference, 0.0, 0)}
            rows = block_inputs(split(original.net, False)[0], data)
            original_block = split(original.net, False)[1]
            models["original"] = (scores(original_block, original.net.fc, rows), 0.0, 0)
            for name in args.variants.split(","):
                settings = dict(VARIANTS[name])
                last_layer = settings.pop("last_layer", False)
                trunk, block = split(original.net, last_layer)
                variant_rows = block_inputs(trunk, data) if last_layer else rows
                started = time.perf_counter()
                block, head, epochs = retrain_block(
                    block, original.net.fc, variant_rows, **settings
                )
                seconds = time.perf_counter() - started
                models[name] = (scores(block, head, variant_rows), seconds, epochs)
            for name, (result, seconds, epochs) in models.items():
                cells = " | ".join(
                    f"{result[k]:.3f}" for k in ("forget", "retain", "test", "probe")
                )
                row = f"| {kind} | {seed} | {name} | {cells} | {gap(result, reference):.4f}"
                print(f"{row} | {seconds:.1f} | {epochs} |", flush=True)


if __name__ == "__main__":
    main()
