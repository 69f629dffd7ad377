"""Backbones as LightningModules on one shared classifier base, and a registry of them."""

from ps_lightning.models.classifier import (
    ARCHITECTURES,
    VGG16,
    CifarResNet,
    ImageClassifier,
    LeNet5,
    ResNet18,
    ResNet20,
    ResNet50,
    ResNet56,
    load_classifier,
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
    "load_classifier",
]
