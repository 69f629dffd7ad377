"""Turn a development copy of TinyImageNet-200 with extra classes into the official 200 classes.

    .venv/bin/python benchmarks/prune_tinyimagenet.py DATA_DIR/tiny-imagenet-200 [--extra WNID ...]

GitHub ``rangeetpan/IMagenet`` holds the official ``tiny-imagenet-200`` layout with its original
JPEGs plus two classes that repository added (``n02480855``, ``n10148035``: 500 training and 50
validation images each). This removes them from ``wnids.txt``, ``train/`` and the validation
annotations and images, leaving the official 100,000 train / 10,000 val images that
`TinyImageNetDataModule` reads. Idempotent; prints what it removed. Development only: users
download the official archive (``download: true``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

EXTRA_CLASSES = ("n02480855", "n10148035")


def prune(root: Path, extra: tuple[str, ...]) -> dict[str, int]:
    removed = {"wnids": 0, "train_folders": 0, "val_images": 0}
    wnids_path = root / "wnids.txt"
    wnids = [line.strip() for line in wnids_path.read_text().splitlines() if line.strip()]
    kept = [wnid for wnid in wnids if wnid not in extra]
    removed["wnids"] = len(wnids) - len(kept)
    wnids_path.write_text("\n".join(kept) + "\n")
    for wnid in extra:
        folder = root / "train" / wnid
        if folder.is_dir():
            shutil.rmtree(folder)
            removed["train_folders"] += 1
    annotations_path = root / "val" / "val_annotations.txt"
    lines = annotations_path.read_text().splitlines()
    kept_lines = []
    for line in lines:
        name, wnid = line.split("\t")[:2]
        if wnid in extra:
            (root / "val" / "images" / name).unlink(missing_ok=True)
            removed["val_images"] += 1
        else:
            kept_lines.append(line)
    annotations_path.write_text("\n".join(kept_lines) + "\n")
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the tiny-imagenet-200 folder")
    parser.add_argument("--extra", nargs="+", default=list(EXTRA_CLASSES))
    args = parser.parse_args()
    print(prune(args.root, tuple(args.extra)))


if __name__ == "__main__":
    main()
