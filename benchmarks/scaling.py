"""How the cost of one unlearning request scales: with the forget-set size k, and with the
training-set size N at fixed k.

    python benchmarks/scaling.py            # k = 100..10,000 at N = 60,000;
                                            # N = 10,000..100,000 at k = 1,000
    python benchmarks/scaling.py --quick    # three points per series

One request is the product's `PSUnlearnModule` under `lightning.Trainer` (no logger, no
progress bar), from constructing the datamodule to the result checkpoint written:

- Naive PS with a cached surgery index: forward pass over the k forget samples, their Gram
  matrix, the d×d surgery; the index (a pass over all N samples) is built by a first,
  separately timed request per N;
- PS: forward passes over the forget set and the 2,000-sample retain subset, then 50 epochs of
  soft-label fine-tuning on the cached forget features (early stop off: every epoch runs).

Data: random uint8 32×32 images in memory (the real `MNISTDataModule` with its file loading
replaced; a CLI request also reads the dataset files, an O(N) cost measured in
unlearning_vs_retrain.py). Model: an untrained LeNet5 saved in the product's checkpoint format
(the timing does not depend on its accuracy). The slope of log(time) against log(size) is
fitted for every series: 0 means the cost does not grow, 1 means it grows in proportion.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from common import Clock, fmt_seconds, header, quiet_lightning, set_threads

from ps_lightning.data import MNISTDataModule
from ps_lightning.data.sources import Source
from ps_lightning.files import atomic_torch_save
from ps_lightning.models import LeNet5
from ps_lightning.models.classifier import classifier_record
from ps_lightning.prototype_surgery import PSUnlearnModule

SEED = 209
N_TEST = 10_000
PS_EPOCHS = 50
FLAT_SLOPE = 0.1  # |slope| below this: the per-request cost does not grow with N


def random_source(n_train: int) -> Source:
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randint(
        0, 256, (n_train + N_TEST, 1, 32, 32), dtype=torch.uint8, generator=generator
    )
    labels = torch.randint(0, 10, (n_train + N_TEST,), generator=generator)
    classes = [str(c) for c in range(10)]
    return Source(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes)


def datamodule(source: Source, forget_file: Path | None = None) -> MNISTDataModule:
    """The real MNIST datamodule over in-memory tensors; a forget request from a file."""
    cls = type("InMemoryMNIST", (MNISTDataModule,), {"load_source": lambda self: source})
    if forget_file is None:
        return cls()
    return cls(forget="indices", forget_indices_file=str(forget_file))


def write_original(path: Path, source: Source) -> None:
    """An (untrained) LeNet5 original in the product's checkpoint format, for this data."""
    torch.manual_seed(SEED)
    model = LeNet5(num_classes=10, in_channels=1)
    with torch.no_grad():  # W ≠ W0, as after training
        model.net.fc.weight.add_(torch.randn_like(model.net.fc.weight))
    record = classifier_record(model, datamodule(source).state_dict())
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "ps_lightning": record,
    }
    atomic_torch_save(path, checkpoint)


def forget_file(folder: Path, n_train: int, k: int) -> Path:
    generator = torch.Generator().manual_seed(SEED + k)
    indices = torch.randperm(n_train, generator=generator)[:k].sort().values.tolist()
    path = folder / f"forget-{n_train}-{k}.json"
    path.write_text(json.dumps(indices))
    return path


def request(
    source: Source, original: Path, forget: Path, root: Path, **method: Any
) -> tuple[Clock, PSUnlearnModule]:
    """Time of one request, datamodule construction to result checkpoint."""
    started = Clock.now()
    data = datamodule(source, forget)
    module = PSUnlearnModule(str(original), num_classes=10, in_channels=1, **method)
    module.check_data(data)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=data)
    return Clock.now().since(started), module


NAIVE: dict[str, Any] = {"method": "naive"}
PS: dict[str, Any] = {"method": "ps", "epochs": PS_EPOCHS, "early_stop": "off"}


class Point:
    """One training set with its original model and cached index."""

    def __init__(self, n_train: int, folder: Path) -> None:
        self.n = n_train
        self.folder = folder / f"n{n_train}"
        self.folder.mkdir()
        self.source = random_source(n_train)
        self.original = self.folder / "original.ckpt"
        write_original(self.original, self.source)
        # The first request builds the surgery index (a forward pass over all N samples).
        forget = forget_file(self.folder, n_train, 100)
        self.index, module = request(self.source, self.original, forget, self.folder, **NAIVE)
        assert module.index_built

    def request(self, k: int, method: dict[str, Any]) -> Clock:
        forget = forget_file(self.folder, self.n, k)
        clock, module = request(self.source, self.original, forget, self.folder, **method)
        assert not module.index_built, "the cached index was not used"
        return clock


def medians(cases: list[tuple[Point, int]], method: dict[str, Any], repeats: int) -> list[Clock]:
    """Median time of each (point, k) case, measured in rounds over all cases: a change of load
    on this shared machine then falls on every case alike instead of on one size."""
    clocks: list[list[Clock]] = [[] for _ in cases]
    for _ in range(repeats):
        for i, (point, k) in enumerate(cases):
            clocks[i].append(point.request(k, method))
    return [Clock(*(statistics.median(c[f] for c in case) for f in range(2))) for case in clocks]


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def print_series(title: str, name: str, sizes: list[int], series: dict[str, list[Clock]]) -> None:
    print(f"\n## {title}: CPU time (wall time)")
    print(f"{name:>8}" + "".join(f"{label:>28}" for label in series))
    for i, size in enumerate(sizes):
        cells = (f"{fmt_seconds(v[i].cpu)} ({fmt_seconds(v[i].wall)})" for v in series.values())
        print(f"{size:>8,}" + "".join(f"{cell:>28}" for cell in cells))
    slopes = (
        f"{slope(sizes, [c.cpu for c in v]):.2f} ({slope(sizes, [c.wall for c in v]):.2f})"
        for v in series.values()
    )
    print(f"{'slope':>8}" + "".join(f"{cell:>28}" for cell in slopes))


def profile_request(n_train: int, k: int) -> None:
    """Where a cached Naive PS request spends its time at training-set size ``n_train``."""
    with tempfile.TemporaryDirectory() as tmp:
        point = Point(n_train, Path(tmp))
        point.request(k, NAIVE)  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        point.request(k, NAIVE)
        profiler.disable()
    print(f"\n## cProfile: one cached Naive PS request, N = {n_train:,}, k = {k:,}")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three points per series")
    parser.add_argument("--repeats", type=int, default=4, help="requests per point (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="cProfile one cached Naive PS request at N"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    header("Scaling of one unlearning request (PSUnlearnModule, LeNet5, CPU)", args.threads)
    forget_sizes = [100, 1_000, 10_000] if args.quick else [100, 300, 1_000, 3_000, 10_000]
    train_sizes = [10_000, 30_000, 100_000] if args.quick else [10_000, 20_000, 50_000, 100_000]
    fixed_n, fixed_k = 60_000, 1_000
    if args.profile:
        profile_request(args.profile, fixed_k)
        return

    naive_label, ps_label = "Naive PS (cached index)", f"PS ({PS_EPOCHS} epochs)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = Point(fixed_n, folder)
        cases = [(base, k) for k in forget_sizes]
        by_k = {
            naive_label: medians(cases, NAIVE, args.repeats),
            ps_label: medians(cases, PS, args.repeats),
        }
        print_series(f"vs forget-set size k (N = {fixed_n:,})", "k", forget_sizes, by_k)

        points = [base if n == fixed_n else Point(n, folder) for n in train_sizes]
        cases = [(point, fixed_k) for point in points]
        by_n = {
            "index build (1st request)": [point.index for point in points],
            naive_label: medians(cases, NAIVE, args.repeats),
            ps_label: medians(cases, PS, args.repeats),
        }
        print_series(f"vs training-set size N (k = {fixed_k:,})", "N", train_sizes, by_n)

    print("\n## slopes of log(CPU time) against log(size)")
    for label, clocks in by_k.items():
        print(f"vs k, {label}: {slope(forget_sizes, [c.cpu for c in clocks]):.2f}")
    for label, clocks in by_n.items():
        s = slope(train_sizes, [c.cpu for c in clocks])
        if label.startswith("index"):
            print(f"vs N, {label}: {s:.2f} (one pass over the training set: grows with N)")
        else:
            verdict = "met" if abs(s) < FLAT_SLOPE else "MISSED"
            print(
                f"vs N, {label}: {s:.2f} (target: does not grow with N, |slope| < "
                f"{FLAT_SLOPE}: {verdict})"
            )


if __name__ == "__main__":
    main()
