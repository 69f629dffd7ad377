"""Raw datasets as in-memory uint8 tensors.

Every loader returns a `Source`: images as uint8 N×C×H×W tensors (decoded once, kept in memory
so that batches are cut by indexing and augmented on the device), labels as int64 tensors.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image

from ps_lightning.console import progress
from ps_lightning.files import MACHINE_ERRNOS, atomic_write

Files = list[tuple[Path, int]]  # (image file, label)


class Source(NamedTuple):
    train_images: torch.Tensor  # uint8, N×C×H×W
    train_labels: torch.Tensor  # int64, N
    test_images: torch.Tensor  # uint8, M×C×H×W
    test_labels: torch.Tensor  # int64, M
    classes: list[str]


TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINYIMAGENET_FOLDER = "tiny-imagenet-200"
TINYIMAGENET_CACHE = "ps_lightning_cache.npz"
# Bumped whenever the cache layout changes, so an old cache is rebuilt rather than misread.
_CACHE_VERSION = 1
_TINY_SIZE = 64


def _not_found(what: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found at {path}. Set `download: true` (or pass `--data.download true`) "
        f"to fetch it, or point `data_dir` at a folder that already holds the files."
    )


def _digit_classes() -> list[str]:
    return [str(i) for i in range(10)]


def load_digits() -> Source:
    """scikit-learn's bundled 8×8 digits, upscaled to 32×32 so LeNet-sized models fit them."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    # Pixel values are 0..16 counts of set bits in a 4×4 block, not 0..255 intensities.
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    resized = torch.nn.functional.interpolate(
        pixels, size=(32, 32), mode="bilinear", align_corners=False, antialias=False
    )
    images = resized.round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)

    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    # The split shuffles; sorting keeps sample order tied to the original file, not the RNG.
    train = torch.as_tensor(np.sort(train_idx))
    test = torch.as_tensor(np.sort(test_idx))
    return Source(images[train], labels[train], images[test], labels[test], _digit_classes())


@contextlib.contextmanager
def _downloading(what: str, data_dir: str) -> Iterator[None]:
    """Around a torchvision download: a failure (no network, a host that refuses, a failed
    checksum) becomes one error naming the dataset, the folder and the fix, and the folders
    created for it are removed again when they stayed empty."""
    created = Path(data_dir).absolute()
    while not created.parent.exists():
        created = created.parent
    existed = created.exists()
    try:
        yield
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        if isinstance(error, OSError) and error.errno in MACHINE_ERRNOS:
            raise  # a full disk or a folder it may not write: this machine, not the network
        if not existed and created.is_dir():
            for folder in sorted(created.rglob("*"), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            if not any(created.iterdir()):
                created.rmdir()
        reason = " ".join(str(error).split())  # torchvision's own spans several lines
        raise OSError(
            f"could not download {what} into '{data_dir}' ({reason}). Check this machine's "
            "network access, or put the dataset's files there and set `download: false`."
        ) from error


def _load_idx_dataset(cls: Any, data_dir: str, download: bool, classes: list[str]) -> Source:
    """An MNIST-format dataset of torchvision (idx files under ``<data_dir>/<Class>/raw``),
    zero-padded from 28×28 to 32×32 (the input size of the original LeNet-5)."""
    raw = Path(data_dir) / cls.__name__ / "raw"
    names = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    # torchvision only says "Dataset not found"; check first so the error can name the path.
    if not download and not all((raw / name).is_file() for name in names):
        raise _not_found(cls.__name__, raw)

    if download:
        with _downloading(cls.__name__, data_dir):
            cls(root=data_dir, train=True, download=True)  # fetches both splits' files
    splits = [cls(root=data_dir, train=train) for train in (True, False)]
    images = [
        torch.nn.functional.pad(split.data, (2, 2, 2, 2)).unsqueeze(1).contiguous()
        for split in splits
    ]
    labels = [split.targets.to(torch.int64) for split in splits]
    return Source(images[0], labels[0], images[1], labels[1], classes)


def load_mnist(data_dir: str, download: bool) -> Source:
    """MNIST at 32×32."""
    from torchvision import datasets

    return _load_idx_dataset(datasets.MNIST, data_dir, download, _digit_classes())


def load_fashion_mnist(data_dir: str, download: bool) -> Source:
    """Fashion-MNIST (Zalando's 60k/10k clothing images, MNIST's format) at 32×32."""
    from torchvision import datasets

    return _load_idx_dataset(
        datasets.FashionMNIST, data_dir, download, list(datasets.FashionMNIST.classes)
    )


def _load_cifar(cls: Any, data_dir: str, download: bool) -> Source:
    folder = Path(data_dir) / cls.base_folder
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and not download:
        raise _not_found(f"{cls.__name__} ({', '.join(missing)})", folder)

    if missing:
        with _downloading(cls.__name__, data_dir):
            cls(root=data_dir, train=True, download=True)  # fetches both splits' files
    try:
        splits = [cls(root=data_dir, train=train) for train in (True, False)]
    except RuntimeError as err:
        # All files are present here, so torchvision's complaint is a failed md5 check.
        raise ValueError(
            f"{cls.__name__} files in {folder} are corrupted or incomplete (checksum mismatch): "
            f"delete that folder and load again with `download: true`."
        ) from err
    # torchvision keeps CIFAR as N×H×W×C numpy; the models want channels first.
    images = [torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous() for split in splits]
    labels = [torch.as_tensor(split.targets, dtype=torch.int64) for split in splits]
    return Source(images[0], labels[0], images[1], labels[1], list(splits[0].classes))


def load_cifar10(data_dir: str, download: bool) -> Source:
    from torchvision import datasets

    return _load_cifar(datasets.CIFAR10, data_dir, download)


def load_cifar100(data_dir: str, download: bool) -> Source:
    from torchvision import datasets

    return _load_cifar(datasets.CIFAR100, data_dir, download)


def _list_jpegs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.endswith(".JPEG")
    )


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _tiny_classes(root: Path, wnids: list[str]) -> list[str]:
    words_path = root / "words.txt"
    if not words_path.is_file():
        return list(wnids)
    words: dict[str, str] = {}
    for line in _read_lines(words_path):
        wnid, _, name = line.partition("\t")
        words[wnid.strip()] = name.strip()
    # words.txt covers all of ImageNet; a class it lacks keeps its wnid as its name.
    return [words.get(wnid) or wnid for wnid in wnids]


def _tiny_files(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """The wnids and (file, label) pairs of both splits, validated before anything is decoded."""
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        raise FileNotFoundError(
            f"{wnids_path} is missing: {root} is not a complete TinyImageNet folder. Delete it and "
            f"load again with `download: true`, or point `data_dir` at a complete copy."
        )
    wnids = [line.strip() for line in _read_lines(wnids_path)]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if len(index) != len(wnids):
        raise ValueError(f"{wnids_path} lists some wnid more than once")

    train: list[tuple[Path, int]] = []
    for wnid in wnids:
        files = _list_jpegs(root / "train" / wnid / "images")
        if not files:
            raise FileNotFoundError(
                f"no training images for class {wnid} in {root / 'train' / wnid / 'images'}: "
                f"the TinyImageNet folder is incomplete; delete it and load again with "
                f"`download: true`."
            )
        train += [(path, index[wnid]) for path in files]

    val_dir = root / "val"
    annotations_path = val_dir / "val_annotations.txt"
    if not annotations_path.is_file():
        raise FileNotFoundError(
            f"{annotations_path} is missing: the TinyImageNet folder is incomplete; delete it and "
            f"load again with `download: true`."
        )
    annotated: dict[str, int] = {}
    for number, line in enumerate(_read_lines(annotations_path), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(f"{annotations_path}:{number}: expected 'filename<TAB>wnid...'")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise ValueError(
                f"{annotations_path}:{number}: {name} is labelled {wnid}, which is not in "
                f"{wnids_path}"
            )
        annotated[name] = index[wnid]

    test: list[tuple[Path, int]] = []
    val_files = _list_jpegs(val_dir / "images")
    for path in val_files:
        if path.name not in annotated:
            raise ValueError(f"validation image {path} has no label in {annotations_path}")
        test.append((path, annotated[path.name]))
    on_disk = {path.name for path in val_files}
    absent = sorted(name for name in annotated if name not in on_disk)
    if absent:
        raise ValueError(
            f"{annotations_path} labels {len(absent)} image(s) missing from {val_dir / 'images'}, "
            f"e.g. {absent[0]}"
        )
    return wnids, train, test


def decode_images(
    files: Files, mode: Literal["L", "RGB"], size: int | None, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×C×H×W images and int64 labels of ``files``, converted to ``mode``; resized
    (bilinear) to ``size``×``size`` if given, else every image must have the first one's size."""
    try:
        with Image.open(files[0][0]) as first:
            width, height = (size, size) if size else first.size
    except OSError as error:
        raise ValueError(f"'{files[0][0]}' is not an image Pillow can read ({error}).") from None
    channels = 1 if mode == "L" else 3
    images = np.empty((len(files), channels, height, width), dtype=np.uint8)

    def decode_one(i: int) -> None:
        path = files[i][0]
        try:
            with Image.open(path) as image:
                converted = image.convert(mode)
        except OSError as error:
            raise ValueError(f"'{path}' is not an image Pillow can read ({error}).") from None
        if size:
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        elif converted.size != (width, height):
            raise ValueError(
                f"'{path}' is {converted.size[0]}×{converted.size[1]}, but '{files[0][0]}' is "
                f"{width}×{height}: give image_size to resize every image to one size."
            )
        pixels = np.asarray(converted)
        images[i] = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)

    # Pillow releases the GIL while decoding, so threads cut the one-off decode.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        decoded = pool.map(decode_one, range(len(files)))
        list(progress(decoded, f"decoding {what}", total=len(files), unit="img"))
    labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
    return images, labels


def _read_tiny_cache(path: Path, n_files: int) -> Source | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            if int(cache["version"]) != _CACHE_VERSION or int(cache["n_files"]) != n_files:
                return None
            arrays = {key: cache[key] for key in cache.files}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        # An unreadable cache (say, from an interrupted older writer) is rebuilt, not fatal.
        return None
    return Source(
        torch.from_numpy(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"]),
        torch.from_numpy(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"]),
        [str(name) for name in arrays["classes"]],
    )


def load_tinyimagenet(data_dir: str, download: bool) -> Source:
    """TinyImageNet-200 at 64×64; the labelled validation set serves as the test set.

    The first load decodes every JPEG and caches the arrays in one uncompressed `.npz` next to
    the images; later loads read that cache as long as the number of image files is unchanged.
    """
    root = Path(data_dir) / TINYIMAGENET_FOLDER
    if not root.is_dir():
        if not download:
            raise _not_found("TinyImageNet", root)
        from torchvision.datasets.utils import download_and_extract_archive

        with _downloading("TinyImageNet", data_dir):
            download_and_extract_archive(
                TINYIMAGENET_URL, download_root=data_dir, md5=TINYIMAGENET_MD5
            )

    wnids, train_files, test_files = _tiny_files(root)
    n_files = len(train_files) + len(test_files)
    cache_path = root / TINYIMAGENET_CACHE
    cached = _read_tiny_cache(cache_path, n_files)
    if cached is not None:
        return cached

    classes = _tiny_classes(root, wnids)
    train_images, train_labels = decode_images(train_files, "RGB", None, "TinyImageNet train")
    test_images, test_labels = decode_images(test_files, "RGB", None, "TinyImageNet val")
    for images, files in ((train_images, train_files), (test_images, test_files)):
        if images.shape[2:] != (_TINY_SIZE, _TINY_SIZE):
            raise ValueError(
                f"{files[0][0]} is {images.shape[3]}×{images.shape[2]}, expected "
                f"{_TINY_SIZE}×{_TINY_SIZE}"
            )
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "classes": np.array(classes, dtype=np.str_),
        "n_files": np.array(n_files, dtype=np.int64),
        "version": np.array(_CACHE_VERSION, dtype=np.int64),
    }
    atomic_write(cache_path, lambda handle: np.savez(handle, **arrays))
    return Source(
        torch.from_numpy(train_images),
        torch.from_numpy(train_labels),
        torch.from_numpy(test_images),
        torch.from_numpy(test_labels),
        classes,
    )
