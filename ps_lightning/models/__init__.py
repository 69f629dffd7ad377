"""Backbones as LightningModules on one shared classifier base, and a registry of them."""

from ps_lightning.models.classifier import ARCHITECTURES, ImageClassifier, load_classifier
from ps_lightning.models.torchvision_classifier import TorchvisionClassifier
from ps_lightning.models.zoo import (
    VGG16,
    CifarResNet,
    LeNet5,
    ResNet18,
    ResNet20,
    ResNet50,
    ResNet56,
)

__all__ = [
    "ARCHITECTURES",
    "VGG16",
    "CifarResNet",
    "ImageClassifier",
    "LeNet5",
    "ResNet18",
    "ResNet20",
    "ResNet50",
    "ResNet56",
    "TorchvisionClassifier",
    "load_classifier",
]
