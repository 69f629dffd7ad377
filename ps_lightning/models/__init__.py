"""Backbones as LightningModules on one shared classifier base, and a registry of them."""

from ps_lightning.models.classifier import ARCHITECTURES, ImageClassifier, load_classifier
from ps_lightning.models.device_speed import ChannelsLast, CompileNetwork
from ps_lightning.models.initial_head import InitialHead, RecordInitialHead
from ps_lightning.models.timm_classifier import TimmClassifier
from ps_lightning.models.torchvision_classifier import TorchvisionClassifier
from ps_lightning.models.user_network import UserNetwork, supplying_network
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
    "ChannelsLast",
    "CifarResNet",
    "CompileNetwork",
    "ImageClassifier",
    "InitialHead",
    "LeNet5",
    "RecordInitialHead",
    "ResNet18",
    "ResNet20",
    "ResNet50",
    "ResNet56",
    "TimmClassifier",
    "TorchvisionClassifier",
    "UserNetwork",
    "load_classifier",
    "supplying_network",
]
