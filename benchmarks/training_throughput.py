"""Training throughput: Lightning against a plain PyTorch loop, and the in-memory data path
against a per-sample torchvision PIL pipeline.

    python benchmarks/training_throughput.py               # MNIST-shaped 20,000 + digits + CIFAR
    python benchmarks/training_throughput.py --mnist-n 60000

1. One epoch of original-model training: the project's LeNet5 (`ImageClassifier`: its
   training_step, metric and logging) fed by the project's datamodule (TensorSamples batches,
   normalised in `on_after_batch_transfer`) under `lightning.Trainer`, against a plain loop
   with the same network, the same uint8 tensors normalised by the same function, the same
   Adam and batch size. Progress bar, logger, checkpointing, model summary and validation are
   off; one warm-up epoch, then the median of several. The epoch is timed from
   `on_train_epoch_start` to `on_train_epoch_end`; the whole `fit` call is printed too.
2. Data path on CIFAR-shaped random uint8 images (no model): the datamodule's loader plus
   `model_input(augment_batch=True)` (batched random crop, flip, normalise) against a Dataset
   that makes a PIL image per sample and applies torchvision RandomCrop(32, padding=4),
   RandomHorizontalFlip, ToTensor and Normalize, batched by the default collate.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import statistics
import tempfile
import time
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from common import Clock, fmt_seconds, header, quiet_lightning, set_threads
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ps_lightning.data import CIFAR10DataModule, DigitsDataModule, MNISTDataModule
from ps_lightning.data.augment import normalize
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.sources import Source
from ps_lightning.models import LeNet5

SEED = 209
OVERHEAD_TARGET = 5.0  # percent


# ---------------------------------------------------------------------- data in memory
def random_source(n_train: int, channels: int, size: int, seed: int = SEED) -> Source:
    generator = torch.Generator().manual_seed(seed)
    n_test = max(n_train // 6, 100)

    def images(n: int) -> torch.Tensor:
        shape = (n, channels, size, size)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, 10, (n,), generator=generator)

    classes = [str(c) for c in range(10)]
    return Source(images(n_train), labels(n_train), images(n_test), labels(n_test), classes)


def in_memory(cls: type[UnlearningDataModule], source: Source, **kwargs: Any) -> Any:
    """The real datamodule ``cls`` (its normalisation, loaders, batch transfer, augmentation)
    with its files replaced by the tensors of ``source``."""
    subclass = type(f"InMemory{cls.__name__}", (cls,), {"load_source": lambda self: source})
    return subclass(**kwargs)


# ---------------------------------------------------------------------- 1. Lightning vs plain
class TimedLeNet5(LeNet5):
    """The project's LeNet5 with the recipe's Adam (the CLI adds it otherwise) and none of its
    own callbacks (checkpoint, RunTimer): nothing is written during the timing."""

    def __init__(self, lr: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lr = lr

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=1e-4)

    def configure_callbacks(self) -> list[L.Callback]:
        return []


class BareLeNet5(TimedLeNet5):
    """The same, with a training_step that only computes the loss (no metric, no self.log):
    separates Lightning's loop from the project's per-step logging."""

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        images, labels = batch
        return F.cross_entropy(self(images), labels)


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.started = self.elapsed = Clock(math.nan, math.nan)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = Clock.now()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed = Clock.now().since(self.started)


def lightning_epoch(datamodule: UnlearningDataModule, lr: float, bare: bool = False) -> Clock:
    """One epoch through lightning.Trainer (the epoch itself; fit() set-up aside)."""
    torch.manual_seed(SEED)
    model = (BareLeNet5 if bare else TimedLeNet5)(lr, num_classes=10, in_channels=1)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        # Without a logger the run directory is default_root_dir: keep split.json out of the cwd.
        default_root_dir=tempfile.mkdtemp(prefix="throughput-"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=datamodule)
    return timer.elapsed


def plain_epoch(datamodule: UnlearningDataModule, lr: float) -> Clock:
    """The same epoch as a hand-written loop: same net, tensors, normalisation, Adam, batch."""
    torch.manual_seed(SEED)
    net = TimedLeNet5(lr, num_classes=10, in_channels=1).net
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    images, labels = datamodule.samples("full").tensors
    batch = datamodule.hparams.batch_size
    started = Clock.now()
    order = torch.randperm(len(labels))
    for start in range(0, len(labels), batch):
        rows = order[start : start + batch]
        inputs = normalize(images[rows], datamodule.mean, datamodule.std)
        loss = F.cross_entropy(net(inputs), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Clock.now().since(started)


ROUTES = {
    "plain": "plain PyTorch loop",
    "lightning": "Lightning (project's step)",
    "bare": "Lightning (bare step)",
}


def compare_training(name: str, datamodule: UnlearningDataModule, lr: float, repeats: int) -> float:
    n = len(datamodule.samples("full"))
    print(f"\n## {name}: one epoch, {n:,} samples, batch {datamodule.hparams.batch_size}")
    run = {
        "plain": lambda: plain_epoch(datamodule, lr),
        "lightning": lambda: lightning_epoch(datamodule, lr),
        "bare": lambda: lightning_epoch(datamodule, lr, bare=True),
    }
    for route in run.values():  # warm-up: first-call allocations, lazy imports
        route()
    clocks: dict[str, list[Clock]] = {key: [] for key in ROUTES}
    order = list(ROUTES)
    for i in range(repeats):
        # Rounds in rotating order: a change of load hits every route of a round alike.
        for key in order[i % 3 :] + order[: i % 3]:
            clocks[key].append(run[key]())

    def overhead(key: str, field: str) -> float:
        pairs = zip(clocks[key], clocks["plain"], strict=True)
        ratios = [getattr(a, field) / getattr(b, field) for a, b in pairs]
        return 100.0 * (statistics.median(ratios) - 1.0)

    print(
        f"{'route':<28}{'CPU time':>10}{'overhead':>10}{'wall':>10}{'overhead':>10}"
        f"{'samples/s (CPU)':>17}"
    )
    for key, label in ROUTES.items():
        cpu = statistics.median(c.cpu for c in clocks[key])
        wall = statistics.median(c.wall for c in clocks[key])
        cpu_pct = "" if key == "plain" else f"{overhead(key, 'cpu'):+.1f}%"
        wall_pct = "" if key == "plain" else f"{overhead(key, 'wall'):+.1f}%"
        print(
            f"{label:<28}{fmt_seconds(cpu):>10}{cpu_pct:>10}{fmt_seconds(wall):>10}"
            f"{wall_pct:>10}{n / cpu:>17,.0f}"
        )
    print(
        f"(median of {repeats} rounds; overhead = median per-round ratio to the plain loop − 1;"
        " bare step = loss only, no torchmetrics update, no self.log)"
    )
    return overhead("lightning", "cpu")


def profile_lightning_epoch(datamodule: UnlearningDataModule, lr: float) -> None:
    """cProfile of one Lightning epoch: where the time beyond the plain loop goes."""
    lightning_epoch(datamodule, lr)
    profiler = cProfile.Profile()
    profiler.enable()
    lightning_epoch(datamodule, lr)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"(lightning|torchmetrics|ps_lightning)", 30)


# ---------------------------------------------------------------------- 2. data path
class PILPipeline(Dataset):
    """The classic per-sample torchvision pipeline over the same uint8 images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple, std: tuple):
        self.images = images.permute(0, 2, 3, 1).numpy()  # N×H×W×C, as PIL wants
        self.labels = labels.tolist()
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(np.ascontiguousarray(self.images[index]))
        return self.transform(image), self.labels[index]


def samples_per_second(batches: Any, transform: Any = None) -> tuple[float, int]:
    count = 0
    started = time.perf_counter()
    for images, _ in batches:
        if transform is not None:
            images = transform(images)
        count += len(images)
    return count / (time.perf_counter() - started), count


def compare_data_paths(n: int, pil_n: int, workers: int) -> float:
    print("\n## data path: CIFAR-shaped random uint8 3×32×32, batch 128, crop+flip+normalise")
    source = random_source(n, 3, 32)
    datamodule = in_memory(CIFAR10DataModule, source, batch_size=128, num_workers=0)
    torch.manual_seed(SEED)

    def augment(images: torch.Tensor) -> torch.Tensor:
        return datamodule.model_input(images, augment_batch=True)

    samples_per_second(datamodule.train_dataloader(), augment)  # warm-up
    ours, ours_n = samples_per_second(datamodule.train_dataloader(), augment)
    subset = slice(0, pil_n)
    dataset = PILPipeline(
        source.train_images[subset], source.train_labels[subset], datamodule.mean, datamodule.std
    )
    pil, pil_count = samples_per_second(DataLoader(dataset, batch_size=128, shuffle=True))
    print(
        f"in-memory + on-device transforms (product)   {ours:>10,.0f} samples/s "
        f"({ours_n:,} samples)"
    )
    print(
        f"torchvision per-sample PIL, 0 workers        {pil:>10,.0f} samples/s "
        f"({pil_count:,} samples)"
    )
    if workers > 0:
        loader = DataLoader(
            dataset, batch_size=128, shuffle=True, num_workers=workers, persistent_workers=True
        )
        samples_per_second(loader)  # workers start
        pil_workers, _ = samples_per_second(loader)
        print(
            f"torchvision per-sample PIL, {workers} workers        {pil_workers:>10,.0f} "
            f"samples/s (every core busy)"
        )
    return ours / pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-n", type=int, default=20_000, help="MNIST-shaped train size")
    parser.add_argument("--repeats", type=int, default=4, help="timed epochs per route")
    parser.add_argument("--pil-n", type=int, default=10_000, help="samples through PIL")
    parser.add_argument("--pil-workers", type=int, default=2, help="also time N workers (0: no)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--profile", action="store_true", help="cProfile one Lightning epoch")
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    header("Training throughput: Lightning vs plain PyTorch; data path vs PIL", args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        common = {"data_dir": tmp, "batch_size": 256, "retain_val_size": 0, "augment": False}
        mnist = in_memory(MNISTDataModule, random_source(args.mnist_n, 1, 32), **common)
        digits = DigitsDataModule(**common)
        if args.profile:
            profile_lightning_epoch(mnist, 2e-3)
            return
        overhead = {
            "MNIST-shaped": compare_training("MNIST-shaped LeNet5", mnist, 2e-3, args.repeats),
            "digits": compare_training("digits LeNet5", digits, 3e-3, args.repeats + 2),
        }
    speedup = compare_data_paths(50_000, args.pil_n, args.pil_workers)

    print("\n## ratios")
    for name, percent in overhead.items():
        verdict = "met" if percent <= OVERHEAD_TARGET else "MISSED"
        print(
            f"Lightning overhead (CPU time), {name}: {percent:+.1f}% "
            f"(target ≤{OVERHEAD_TARGET:.0f}%: {verdict})"
        )
    print(f"data path speed-up over torchvision PIL (0 workers each): {speedup:,.1f}×")


if __name__ == "__main__":
    main()
