"""Two data sets kept back from development, cut from TinyImageNet-200, for the check that the
shipped MNIST and CIFAR-10 configurations forget a whole class on data nobody tuned them on.

    .venv/bin/python benchmarks/kept_back_sets.py --tinyimagenet DIR --out OUT [--start 0]

Ten classes of ``wnids.txt`` in its order from ``--start`` (fixed before any result: set A is
``--start 0``, set B ``--start 10``), their 500 training and 50 validation images each:
- ``OUT/mnist/MNIST/raw/``: greyscale, resized to 28×28, as the four MNIST idx files that
  `MNISTDataModule` reads (``--data.init_args.data_dir OUT/mnist``);
- ``OUT/cifar10/{train,test}/<class>/``: links to the 64×64 JPEGs (the datamodule resizes them to
  32×32), the i-th class's folder named after CIFAR-10's i-th class so that `CIFAR10DataModule`
  and the CIFAR-10 configuration take them (``--data.init_args.data_dir OUT/cifar10``).

Then, e.g. (``docs/benchmarks.md`` has the runs and their results):

    ps-lightning bench --dataset mnist --seeds 3 --scenarios wholeclass --methods ps \\
        --runs-dir RUNS --out OUT/results --trainer-arg=--data.init_args.data_dir=OUT/mnist
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import write_idx
from PIL import Image

from ps_lightning.data.datasets import CIFAR10_CLASSES


def class_images(root: Path, wnids: list[str]) -> dict[str, dict[str, list[Path]]]:
    """Each split's JPEGs of each class: ``train/<wnid>/images/`` and the validation images
    that ``val/val_annotations.txt`` assigns to it."""
    train = {wnid: sorted((root / "train" / wnid / "images").glob("*.JPEG")) for wnid in wnids}
    test: dict[str, list[Path]] = {wnid: [] for wnid in wnids}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid, *_ = line.split("\t")
        if wnid in test:
            test[wnid].append(root / "val" / "images" / name)
    return {"train": train, "test": {wnid: sorted(paths) for wnid, paths in test.items()}}


def write_mnist(images: dict[str, dict[str, list[Path]]], wnids: list[str], out: Path) -> None:
    raw = out / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        pixels, labels = [], []
        for label, wnid in enumerate(wnids):
            for path in images[split][wnid]:
                grey = Image.open(path).convert("L").resize((28, 28), Image.BILINEAR)
                pixels.append(torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8))
                labels.append(label)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.stack(pixels).view(-1, 28, 28))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.tensor(labels, dtype=torch.uint8))


def link_cifar10(images: dict[str, dict[str, list[Path]]], wnids: list[str], out: Path) -> None:
    for split, by_class in images.items():
        for wnid, name in zip(wnids, CIFAR10_CLASSES, strict=False):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in by_class[wnid]:
                (folder / path.name).symlink_to(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tinyimagenet", type=Path, required=True, help="tiny-imagenet-200/")
    parser.add_argument("--out", type=Path, required=True, help="a new folder")
    parser.add_argument("--start", type=int, default=0, help="the first class's place")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"'{args.out}' exists: name a new folder (nothing is overwritten).")
    wnids = (args.tinyimagenet / "wnids.txt").read_text().split()[args.start : args.start + 10]
    if len(wnids) < len(CIFAR10_CLASSES):
        raise SystemExit(f"--start {args.start}: wnids.txt has no ten classes from there.")
    images = class_images(args.tinyimagenet, wnids)
    write_mnist(images, wnids, args.out / "mnist")
    link_cifar10(images, wnids, args.out / "cifar10")
    counts = {split: sum(map(len, by_class.values())) for split, by_class in images.items()}
    print(f"classes {wnids}: {counts['train']} training and {counts['test']} test images")
    print(f"written: {args.out / 'mnist'} (MNIST idx), {args.out / 'cifar10'} (CIFAR-10 folder)")


if __name__ == "__main__":
    main()
