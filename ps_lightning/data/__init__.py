"""DataModules that produce the forget and retain splits of a deletion request."""

from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.datasets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    TinyImageNetDataModule,
)
from ps_lightning.data.image_folder import ImageFolderDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "TinyImageNetDataModule",
    "UnlearningDataModule",
]
