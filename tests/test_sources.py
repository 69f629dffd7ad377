"""Loaders in ps_lightning.data.sources, run on tiny files in each dataset's real on-disk format."""

from __future__ import annotations

import functools
import hashlib
import pickle
import struct
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from ps_lightning import console
from ps_lightning.data import sources

# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_shapes_and_determinism() -> None:
    first = sources.load_digits()
    assert first.train_images.shape == (1437, 1, 32, 32)
    assert first.test_images.shape == (360, 1, 32, 32)
    assert first.train_images.dtype == torch.uint8
    assert first.train_labels.dtype == torch.int64
    assert first.classes == [str(i) for i in range(10)]
    # Upscaling must keep the full intensity range, not the raw 0..16.
    assert int(first.train_images.max()) > 200

    labels = torch.cat([first.train_labels, first.test_labels])
    for c in range(10):
        total = int((labels == c).sum())
        expected = total * 360 / 1797
        assert abs(int((first.test_labels == c).sum()) - expected) <= 1

    second = sources.load_digits()
    for a, b in zip(first[:4], second[:4], strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- MNIST


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize(
    ("loader", "folder"),
    [(sources.load_mnist, "MNIST"), (sources.load_fashion_mnist, "FashionMNIST")],
)
def test_idx_datasets_read_idx_files_and_pad(
    tmp_path: Path, loader: Callable[[str, bool], sources.Source], folder: str
) -> None:
    names = {
        "MNIST": [str(i) for i in range(10)],
        "FashionMNIST": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
    }
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    train_x, train_y = _mnist_split(5, 0)
    test_x, test_y = _mnist_split(3, 1)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    src = loader(str(tmp_path), download=False)
    assert src.train_images.shape == (5, 1, 32, 32)
    assert src.test_images.shape == (3, 1, 32, 32)
    assert src.train_images.dtype == torch.uint8
    assert src.train_labels.dtype == torch.int64
    assert src.train_labels.tolist() == train_y.tolist()
    assert src.test_labels.tolist() == test_y.tolist()
    # Pixels start at 1, so a zero can only come from the padding ring.
    assert np.array_equal(src.train_images[:, 0, 2:30, 2:30].numpy(), train_x)
    assert np.array_equal(src.test_images[:, 0, 2:30, 2:30].numpy(), test_x)
    ring = src.train_images.clone()
    ring[:, :, 2:30, 2:30] = 0
    assert int(ring.count_nonzero()) == 0
    assert src.classes == names[folder]


# --------------------------------------------------------------------------- CIFAR


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _chw_pattern(n: int, offset: int) -> np.ndarray:
    """Values vary with sample, channel, row and column at different rates, so mix-ups show."""
    n_, c, h, w = np.meshgrid(
        np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij"
    )
    return ((n_ * 7 + c * 101 + h * 3 + w * 5 + offset) % 256).astype(np.uint8)


def _dump(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle)


def test_cifar10_batches_permuted_to_chw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_parts, train_labels = [], []
    for i in range(1, 6):
        chw = _chw_pattern(2, offset=i)
        labels = [(i + j) % 10 for j in range(2)]
        _dump(folder / f"data_batch_{i}", {"data": chw.reshape(2, -1), "labels": labels})
        train_parts.append(chw)
        train_labels += labels
    test_chw = _chw_pattern(3, offset=50)
    _dump(folder / "test_batch", {"data": test_chw.reshape(3, -1), "labels": [9, 0, 4]})
    names = [f"c{i}" for i in range(10)]
    _dump(folder / "batches.meta", {"label_names": names})

    # The real md5 check still runs, against the files written here.
    monkeypatch.setattr(
        datasets.CIFAR10,
        "train_list",
        [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)],
    )
    monkeypatch.setattr(
        datasets.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]]
    )
    monkeypatch.setattr(
        datasets.CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")},
    )

    src = sources.load_cifar10(str(tmp_path), download=False)
    assert src.train_images.shape == (10, 3, 32, 32)
    assert src.train_images.dtype == torch.uint8
    assert src.train_labels.dtype == torch.int64
    assert np.array_equal(src.train_images.numpy(), np.concatenate(train_parts))
    assert np.array_equal(src.test_images.numpy(), test_chw)
    assert src.train_labels.tolist() == train_labels
    assert src.test_labels.tolist() == [9, 0, 4]
    assert src.classes == names


def test_cifar10_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not the real thing")
    with pytest.raises(ValueError, match="corrupted"):
        sources.load_cifar10(str(tmp_path), download=False)


@pytest.mark.parametrize(
    ("load", "module"),
    [(sources.load_fashion_mnist, datasets.mnist), (sources.load_cifar10, datasets.cifar)],
    ids=["fashion_mnist", "cifar10"],
)
def test_a_failed_download_names_the_folder_and_leaves_no_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: Callable, module: object
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        Path(kwargs.get("download_root") or args[1]).mkdir(parents=True, exist_ok=True)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(module, "download_and_extract_archive", offline)
    data_dir = tmp_path / "missing" / "data"

    with pytest.raises(OSError, match=rf"could not download .* into '{data_dir}'.*no network"):
        load(str(data_dir), download=True)

    assert list(tmp_path.iterdir()) == []


def test_cifar100_fine_labels_permuted_to_chw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_chw, test_chw = _chw_pattern(4, offset=3), _chw_pattern(2, offset=77)
    train_fine, test_fine = [99, 0, 42, 7], [13, 98]
    _dump(
        folder / "train",
        {"data": train_chw.reshape(4, -1), "fine_labels": train_fine, "coarse_labels": [0] * 4},
    )
    _dump(
        folder / "test",
        {"data": test_chw.reshape(2, -1), "fine_labels": test_fine, "coarse_labels": [1] * 2},
    )
    names = [f"fine{i}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["x"] * 20})

    monkeypatch.setattr(datasets.CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(datasets.CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(
        datasets.CIFAR100,
        "meta",
        {"filename": "meta", "key": "fine_label_names", "md5": _md5(folder / "meta")},
    )

    src = sources.load_cifar100(str(tmp_path), download=False)
    assert np.array_equal(src.train_images.numpy(), train_chw)
    assert np.array_equal(src.test_images.numpy(), test_chw)
    assert src.train_labels.tolist() == train_fine
    assert src.test_labels.tolist() == test_fine
    assert src.classes == names


# --------------------------------------------------------------------------- TinyImageNet

# wnids.txt deliberately not in sorted order: labels must follow the file, not the folder names.
_WNIDS = ["n02", "n01", "n03"]
_COLOURS = {"n02": (200, 30, 30), "n01": (30, 200, 30), "n03": (30, 30, 200)}
_VAL = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n02"), ("val_2.JPEG", "n01"), ("val_3.JPEG", "n03")]


def _jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path, quality=95)


def _tiny_tree(data_dir: Path, val: list[tuple[str, str]] = _VAL) -> Path:
    root = data_dir / "tiny-imagenet-200"
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
    (root / "words.txt").write_text("n01\tone, uno\nn02\ttwo\nn99\tunused\n")
    for wnid in _WNIDS:
        for i in range(2):
            _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", _COLOURS[wnid])
    for name, wnid in val:
        _jpeg(root / "val" / "images" / name, _COLOURS.get(wnid, (0, 0, 0)))
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in val)
    )
    return root


def _assert_colours(images: torch.Tensor, labels: torch.Tensor) -> None:
    for image, label in zip(images, labels, strict=True):
        expected = torch.tensor(_COLOURS[_WNIDS[int(label)]], dtype=torch.float32)
        mean = image.float().mean(dim=(1, 2))
        assert torch.allclose(mean, expected, atol=4), (mean, expected)


def test_tinyimagenet_labels_cache_and_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tiny_tree(tmp_path)
    first = sources.load_tinyimagenet(str(tmp_path), download=False)

    assert first.train_images.shape == (6, 3, 64, 64)
    assert first.test_images.shape == (4, 3, 64, 64)
    assert first.train_images.dtype == torch.uint8
    assert first.train_labels.dtype == torch.int64
    assert first.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert first.test_labels.tolist() == [2, 0, 1, 2]
    # words.txt names n01 and n02; n03 is absent there and falls back to its wnid.
    assert first.classes == ["two", "one, uno", "n03"]
    _assert_colours(first.train_images, first.train_labels)
    _assert_colours(first.test_images, first.test_labels)

    cache = root / "ps_lightning_cache.npz"
    assert cache.is_file()
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    with np.load(cache, allow_pickle=False) as stored:
        assert {"train_images", "train_labels", "test_images", "test_labels", "classes"} <= set(
            stored.files
        )

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should make decoding unnecessary")

    monkeypatch.setattr(Image, "open", no_decoding)
    second = sources.load_tinyimagenet(str(tmp_path), download=False)
    for a, b in zip(first[:4], second[:4], strict=True):
        assert torch.equal(a, b)
    assert second.classes == first.classes


def test_tinyimagenet_cache_rebuilt_when_files_change(tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path)
    sources.load_tinyimagenet(str(tmp_path), download=False)
    _jpeg(root / "train" / "n03" / "images" / "n03_9.JPEG", _COLOURS["n03"])
    again = sources.load_tinyimagenet(str(tmp_path), download=False)
    assert again.train_labels.tolist() == [0, 0, 1, 1, 2, 2, 2]


def test_tinyimagenet_unknown_wnid_in_annotations(tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path, val=[*_VAL, ("val_4.JPEG", "n77")])
    with pytest.raises(ValueError, match=r"val_4\.JPEG.*n77"):
        sources.load_tinyimagenet(str(tmp_path), download=False)
    assert not (root / "ps_lightning_cache.npz").exists()


def test_tinyimagenet_unannotated_val_image(tmp_path: Path) -> None:
    root = _tiny_tree(tmp_path)
    _jpeg(root / "val" / "images" / "stray.JPEG", (0, 0, 0))
    with pytest.raises(ValueError, match=r"stray\.JPEG"):
        sources.load_tinyimagenet(str(tmp_path), download=False)
    assert not (root / "ps_lightning_cache.npz").exists()


# --------------------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    ("loader", "expected_path"),
    [
        (sources.load_mnist, "MNIST"),
        (sources.load_fashion_mnist, "FashionMNIST"),
        (sources.load_cifar10, "cifar-10-batches-py"),
        (sources.load_cifar100, "cifar-100-python"),
        (sources.load_tinyimagenet, "tiny-imagenet-200"),
    ],
)
def test_missing_files_without_download(
    tmp_path: Path, loader: Callable[[str, bool], sources.Source], expected_path: str
) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="download") as info:
        loader(str(data_dir), download=False)
    assert expected_path in str(info.value)
    assert str(data_dir) in str(info.value)
    assert not data_dir.exists()


def test_the_tinyimagenet_decode_shows_its_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_tree(tmp_path)
    # As on a terminal (the bar is off when stderr is not one, as under pytest).
    monkeypatch.setattr(sources, "progress", functools.partial(console.progress, enabled=True))
    sources.load_tinyimagenet(str(tmp_path), download=False)
    shown = capsys.readouterr().err
    assert "decoding TinyImageNet train:   0%|          | 0/6 [00:00<?, ?img/s]" in shown
    assert "decoding TinyImageNet val:   0%|          | 0/4 [00:00<?, ?img/s]" in shown
