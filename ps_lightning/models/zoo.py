"""The project's networks as classifiers: the paper's (LeNet5, the CIFAR ResNets, VGG16-BN) and
the SalUn line's ResNet-18 / ResNet-50. Each names its network and its defaults; training,
checkpoints and the registry are `ImageClassifier`'s."""

from __future__ import annotations

from torch import nn

from ps_lightning.models.classifier import ImageClassifier
from ps_lightning.models.lenet import LeNet5Net
from ps_lightning.models.resnet_cifar import CifarResNetNet
from ps_lightning.models.resnet_torchvision import resnet18_net, resnet50_net
from ps_lightning.models.vgg import VGG16Net


class LeNet5(ImageClassifier):
    """LeNet5 for 32×32 inputs (MNIST, digits): 64-d features."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        return LeNet5Net(self.hparams.num_classes, self.hparams.in_channels)


class CifarResNet(ImageClassifier):
    """CIFAR ResNet (depth 6n+2, option-A shortcuts): 64-d features."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        label_smoothing: float = 0.0,
    ) -> None:
        self._depth = depth
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        return CifarResNetNet(self._depth, self.hparams.num_classes, self.hparams.in_channels)


class ResNet20(CifarResNet):
    """The paper's CIFAR-10 network."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(20, num_classes, in_channels, label_smoothing)


class ResNet56(CifarResNet):
    """The CIFAR ResNet with 9 blocks per stage: the network the paper's code called "ResNet50"."""

    def __init__(
        self, num_classes: int = 100, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(56, num_classes, in_channels, label_smoothing)


class ResNet18(ImageClassifier):
    """torchvision's ResNet-18 with a 32×32 stem, the SalUn / l1-sparse papers' CIFAR-10
    network: 512-d features."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        return resnet18_net(self.hparams.num_classes, self.hparams.in_channels)


class ResNet50(ImageClassifier):
    """A true 50-layer bottleneck ResNet with a 32×32 stem: 2048-d features."""

    def __init__(
        self, num_classes: int = 100, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        return resnet50_net(self.hparams.num_classes, self.hparams.in_channels)


class VGG16(ImageClassifier):
    """VGG16 with BatchNorm for 64×64 inputs (TinyImageNet): 1024-d features."""

    def __init__(
        self, num_classes: int = 200, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        return VGG16Net(self.hparams.num_classes, self.hparams.in_channels)
