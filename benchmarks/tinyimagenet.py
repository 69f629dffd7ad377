"""TinyImageNet-200 on the real files: what loading, training VGG16-BN and the surgery index cost
on this machine.

    .venv/bin/python benchmarks/tinyimagenet.py --data-dir DATA [--steps 5] [--threads 2]

``DATA`` holds ``tiny-imagenet-200/`` (the official layout; a development copy from GitHub
``rangeetpan/IMagenet`` is pruned to the official 200 classes by
``benchmarks/prune_tinyimagenet.py``). The script removes the project's cache of decoded images
first, so the first load decodes every JPEG, then loads again from the cache. It times
``--steps`` VGG16-BN training steps at the recipe's batch (128; SGD as in
``configs/tinyimagenet/train/``) through the real LightningModule, and forward passes at the
evaluation batch, and projects the 100-epoch recipe and one feature pass over the training set
from them. Then the surgery index over 100,000 features of VGG16-BN's width (1,024): the Gram
matrix accumulated in batches (``accumulate_gram``) and its cut pseudo-inverse
(``surgery_projection``), the product's own functions, on random non-negative features of that
shape (a real feature pass would take the hours projected above).
"""

from __future__ import annotations

import argparse
import os
import resource
from pathlib import Path

import torch
import torch.nn.functional as F
from common import Clock, header, quiet_lightning, set_threads

from ps_lightning.data import TinyImageNetDataModule
from ps_lightning.data.sources import TINYIMAGENET_CACHE, TINYIMAGENET_FOLDER
from ps_lightning.models import VGG16
from ps_lightning.prototype_surgery.closed_form import (
    accumulate_gram,
    cutoff_rtol,
    surgery_projection,
)

TRAIN_BATCH = 128
EVAL_BATCH = 1024
EPOCHS = 100


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(data_dir: str) -> TinyImageNetDataModule:
    cache = Path(data_dir) / TINYIMAGENET_FOLDER / TINYIMAGENET_CACHE
    cache.unlink(missing_ok=True)
    started = Clock.now()
    data = TinyImageNetDataModule(data_dir=data_dir, download=False)
    first = Clock.now().since(started).wall
    started = Clock.now()
    TinyImageNetDataModule(data_dir=data_dir, download=False)
    cached = Clock.now().since(started).wall
    images, labels = data.samples("train").tensors
    counts = labels.bincount()
    print(
        f"images: {len(labels):,} train ({int(counts.min())}-{int(counts.max())} per class, "
        f"{data.num_classes} classes), {len(data.samples('test').tensors[1]) * 2:,} val "
        f"(half of it reporting); {tuple(images.shape[1:])} uint8"
    )
    print(
        f"first load (decode + cache) {first:.1f} s, cached load {cached:.1f} s, cache "
        f"{cache.stat().st_size / 2**20:,.0f} MiB, peak memory {peak_mib():,.0f} MiB"
    )
    return data


def vgg_costs(data: TinyImageNetDataModule, steps: int) -> float:
    """Seconds per training step and per evaluation image; prints the projections."""
    torch.manual_seed(0)
    model = VGG16(num_classes=200)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    images, labels = data.samples("train").tensors
    batch = data.model_input(images[:TRAIN_BATCH], augment_batch=True)
    targets = labels[:TRAIN_BATCH]
    model.train()
    step_seconds = []
    for _ in range(steps + 1):  # the first step warms up the allocator and kernels
        started = Clock.now()
        loss = F.cross_entropy(model(batch), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_seconds.append(Clock.now().since(started).wall)
    per_step = sorted(step_seconds[1:])[len(step_seconds[1:]) // 2]
    model.eval()
    inputs = data.model_input(images[:EVAL_BATCH])
    with torch.no_grad():
        model.forward_features(inputs[:64])
        started = Clock.now()
        features = model.forward_features(inputs)
        per_image = Clock.now().since(started).wall / EVAL_BATCH
    steps_per_epoch = -(-len(labels) // TRAIN_BATCH)
    epoch = per_step * steps_per_epoch
    print(
        f"VGG16-BN ({features.shape[1]}-d features): {per_step:.2f} s per training step of "
        f"{TRAIN_BATCH} (median of {steps}); one epoch ({steps_per_epoch} steps) ≈ "
        f"{epoch / 3600:.1f} h, the {EPOCHS}-epoch recipe ≈ {epoch * EPOCHS / 86400:.1f} days; "
        f"feature pass {per_image * 1000:.1f} ms per image, over the training set ≈ "
        f"{per_image * len(labels) / 60:.0f} min"
    )
    return features.shape[1]


def surgery_index(width: int, rows: int = 100_000, batch: int = 1024) -> None:
    generator = torch.Generator().manual_seed(0)
    started = Clock.now()
    total = None
    for start in range(0, rows, batch):
        count = min(batch, rows - start)
        features = torch.randn(count, width, generator=generator).relu_()
        total = accumulate_gram(total, features)
    gram_seconds = Clock.now().since(started).wall
    weight = torch.randn(200, width, generator=generator)
    started = Clock.now()
    rtol = cutoff_rtol("auto", width, torch.float32)
    _, rank = surgery_projection(weight, torch.zeros_like(weight), total, rtol)
    projection_seconds = Clock.now().since(started).wall
    print(
        f"surgery index over {rows:,} features of {width}-d: Gram {gram_seconds:.1f} s "
        f"(random features generated inside the loop included), cut pseudo-inverse "
        f"{projection_seconds:.2f} s (rank {rank})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    header("TinyImageNet-200 on the real files", args.threads)
    print(f"# {os.path.abspath(args.data_dir)}")
    data = load(args.data_dir)
    width = vgg_costs(data, args.steps)
    surgery_index(width)


if __name__ == "__main__":
    main()
