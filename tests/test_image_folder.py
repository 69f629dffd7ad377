"""Image folders (`ps_lightning.data.image_folder`): the layout, the decode and its cache, the
datamodule through the real CLI, and the CIFAR-10 JPEG tree through `CIFAR10DataModule`; on
tiny folders of real PNG and JPEG files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from unlearning_fixtures import run_cli

from ps_lightning.data import CIFAR10DataModule, ImageFolderDataModule
from ps_lightning.data import image_folder as image_folder_module
from ps_lightning.data.datasets import CIFAR10_CLASSES
from ps_lightning.data.image_folder import channel_statistics, load_image_folder, scan_image_folder
from ps_lightning.models.classifier import load_classifier

SIZE = 32


def image_of(value: int, mode: str = "L", size: int = SIZE) -> Image.Image:
    """An image whose pixels encode ``value`` (a gradient, so no two images are equal)."""
    ramp = (np.arange(size * size).reshape(size, size) + 7 * value) % 256
    pixels = ramp.astype(np.uint8)
    return Image.fromarray(pixels if mode == "L" else np.stack([pixels] * 3, axis=2), mode)


def write_folder(
    root: Path,
    classes: list[str],
    per_class: dict[str, int],
    suffix: str = ".png",
    mode: str = "L",
    test_name: str = "test",
) -> Path:
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / (test_name if split == "test" else split) / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image_of(100 * label + i, mode).save(folder / f"{i:04d}{suffix}")
    return root


def train_on_folder(folder: Path, runs: Path, run: str, epochs: int, *args: str) -> Path:
    """``ps-lightning fit`` of digits' original.yaml on the image folder ``folder`` (dataset
    name "shapes") for ``epochs``; returns the result checkpoint."""
    run_cli(
        "fit",
        "original.yaml",
        runs,
        run,
        "--data.class_path", "ps_lightning.data.ImageFolderDataModule",
        "--data.init_args.data_dir", str(folder),
        "--data.init_args.name", "shapes",
        "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", str(epochs),
        "--lr_scheduler.init_args.T_max", str(epochs),
        *args,
    )  # fmt: skip
    return runs / "shapes" / run / "checkpoints" / "model.ckpt"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "shapes", ["circle", "square", "star"], {"train": 6, "test": 2})


def test_the_classes_are_the_sorted_folder_names_and_each_file_is_labelled_by_its_folder(
    tmp_path: Path,
) -> None:
    root = write_folder(tmp_path / "f", ["b", "c", "a"], {"train": 2, "test": 1}, test_name="val")
    (root / "train" / "a" / "notes.txt").write_text("not an image")

    classes, train, test = scan_image_folder(root)

    assert classes == ["a", "b", "c"]
    assert [(path.parent.name, label) for path, label in train] == [
        ("a", 0), ("a", 0), ("b", 1), ("b", 1), ("c", 2), ("c", 2),
    ]  # fmt: skip
    assert [path.parent.parent.name for path, _ in test] == ["val"] * 3


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "train").rename(root / "training"), r"no folder '.*train'"),
        (lambda root: (root / "test").rename(root / "testing"), r"no '.*test' or '.*val' folder"),
        (lambda root: (root / "test" / "moon").mkdir(), r"class folders \['moon'\] that"),
        (
            lambda root: [p.unlink() for p in (root / "train" / "star").iterdir()],
            r"training class folders without images: \['star'\]",
        ),
        (
            lambda root: image_of(1, size=16).save(root / "train" / "star" / "small.png"),
            r"small\.png' is 16×16, but .* is 32×32: give image_size",
        ),
        (
            lambda root: (root / "train" / "star" / "broken.png").write_bytes(b"no image"),
            r"broken\.png' is not an image Pillow can read",
        ),
    ],
    ids=["no-train", "no-test", "unknown-test-class", "empty-class", "mixed-sizes", "broken"],
)
def test_a_bad_folder_is_refused_naming_what_is_wrong(
    folder: Path, damage: object, message: str
) -> None:
    damage(folder)  # type: ignore[operator]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_image_folder(folder, channels=1)


def test_images_are_decoded_once_and_a_changed_image_is_decoded_again(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_image_folder(folder, channels=1)
    expected = np.asarray(image_of(100 * 1 + 3))  # square/0003.png
    square = int(torch.nonzero(first.train_labels == 1)[3])
    assert np.array_equal(first.train_images[square, 0].numpy(), expected)
    assert first.train_images.shape == (18, 1, SIZE, SIZE) and first.test_labels.tolist() == [
        0, 0, 1, 1, 2, 2,
    ]  # fmt: skip

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the cache holds these files")

    with monkeypatch.context() as patched:
        patched.setattr(image_folder_module, "decode_images", no_decoding)
        cached = load_image_folder(folder, channels=1)
    assert torch.equal(cached.train_images, first.train_images)

    image_of(250).save(folder / "train" / "circle" / "0000.png")  # another image, same name
    decoded = load_image_folder(folder, channels=1)
    assert not torch.equal(decoded.train_images[0], first.train_images[0])
    # The stale cache of these settings is gone; one of other settings stays.
    assert len(list(folder.glob(".ps_lightning-*.npz"))) == 1
    load_image_folder(folder, channels=3)
    assert len(list(folder.glob(".ps_lightning-*.npz"))) == 2


def test_image_size_resizes_every_image_and_rgb_has_three_channels(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", ["x", "y"], {"train": 2, "test": 1}, ".jpg", mode="RGB")
    source = load_image_folder(root, channels=3, image_size=16)
    assert source.train_images.shape == (4, 3, 16, 16)
    assert source.test_images.shape == (2, 3, 16, 16)


def test_channel_statistics_are_the_pixels_mean_and_std() -> None:
    images = torch.randint(0, 256, (300, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_statistics(images)
    pixels = images.transpose(0, 1).reshape(3, -1).double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), pixels.mean(dim=1))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), pixels.std(dim=1))


def test_the_datamodule_takes_classes_channels_and_statistics_from_the_folder(
    folder: Path,
) -> None:
    data = ImageFolderDataModule(data_dir=str(folder), name="shapes", channels=1, seed=3)

    assert (data.dataset_name, data.num_classes, data.in_channels) == ("shapes", 3, 1)
    assert data.classes == ["circle", "square", "star"]
    images = data.samples("train").tensors[0]
    assert data.mean == channel_statistics(images)[0]
    # The default request, 10% of class 1: one of the six "square" images.
    assert data.samples("train").tensors[1][data.forget_indices].tolist() == [1]
    given = ImageFolderDataModule(data_dir=str(folder), channels=1, mean=[0.5], std=[0.25])
    assert (given.mean, given.std) == ((0.5,), (0.25,))
    assert given.train_fingerprint != data.train_fingerprint  # the normalisation is part of it
    with pytest.raises(ValueError, match=r"mean=\[0.5, 0.5\] has 2 values for 1 channels"):
        ImageFolderDataModule(data_dir=str(folder), channels=1, mean=[0.5, 0.5])


def test_the_cli_trains_a_model_on_an_image_folder(folder: Path, tmp_path: Path) -> None:
    result = train_on_folder(
        folder, tmp_path / "runs", "folder", 1, "--data.init_args.channels", "1"
    )
    model, record = load_classifier(str(result))
    assert record["data"]["split_manifest"]["dataset"] == "shapes"
    assert model.hparams.num_classes == 3 and model.hparams.in_channels == 1


def test_cifar10_loads_the_jpeg_tree_and_refuses_other_classes(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "CIFAR-10-images", CIFAR10_CLASSES, {"train": 2, "test": 1}, ".jpg", "RGB"
    )
    data = CIFAR10DataModule(data_dir=str(root), download=False, forget_ratio=0.5)
    assert data.samples("train").tensors[0].shape == (20, 3, 32, 32)
    assert data.samples("full").tensors[1].tolist() == [i for i in range(10) for _ in range(2)]

    (root / "train" / "truck").rename(root / "train" / "lorry")
    (root / "test" / "truck").rename(root / "test" / "lorry")
    with pytest.raises(ValueError, match=r"not CIFAR-10's .*load it with ImageFolderDataModule"):
        CIFAR10DataModule(data_dir=str(root), download=False, forget_ratio=0.5)
