"""torchvision's ImageNet ResNets (He et al. 2016) adapted to 32×32 images: ResNet-18 and ResNet-50.

The ImageNet stem (7×7 stride-2 conv + max pool) would shrink a 32×32 image to 8×8 before the
first stage, so it is replaced by a single 3×3 stride-1 conv and no pool, as in the common CIFAR
ports. ResNet-18 is the network of the SalUn and l1-sparse papers' CIFAR-10 experiments: their
code (OPTML-Group/Unlearn-Saliency, ``Classification/models/ResNet.py``, ``resnet18`` with
``imagenet=False``) builds exactly this stem on torchvision's stages. Everything after the stem is
torchvision's: four stages at 64/128/256/512 channels (the last three halve the resolution),
1×1 projection shortcuts where shapes change, Kaiming (fan-out) conv init. ResNet-18 has [2, 2,
2, 2] basic blocks (512-d features); ResNet-50 has [3, 4, 6, 3] bottlenecks with expansion 4
(2048-d features). The reference normalises inside the network; here the datamodule does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from ps_lightning.models.last_block import LastBlock, residual_last_block
from ps_lightning.models.resnet_stages import BasicBlock, kaiming_init_convs, make_stage


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """torchvision's shortcut: identity where shapes match, else a strided 1×1 conv + BN."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class Bottleneck(nn.Module):
    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3×3 conv (ResNet v1.5), which is what torchvision ships.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNetNet(nn.Module):
    """Stages of ``block`` (a basic block or ``Bottleneck``, widening its planes by
    ``expansion``), ``blocks`` per stage."""

    def __init__(
        self,
        block: Callable[[int, int, int], nn.Module],
        expansion: int,
        blocks: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.feature_dim = 512 * expansion
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2), strict=True):
            stage, in_planes = make_stage(block, in_planes, planes, count, stride, expansion)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.feature_dim, num_classes)

        kaiming_init_convs(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)

    def last_block(self) -> LastBlock:
        return residual_last_block(
            [self.conv1, self.bn1, nn.ReLU()], [self.layer1, self.layer2, self.layer3, self.layer4]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def resnet18_net(num_classes: int = 10, in_channels: int = 3) -> ResNetNet:
    block = partial(BasicBlock, shortcut=projection)
    return ResNetNet(block, BasicBlock.expansion, (2, 2, 2, 2), num_classes, in_channels)


def resnet50_net(num_classes: int = 100, in_channels: int = 3) -> ResNetNet:
    return ResNetNet(Bottleneck, Bottleneck.expansion, (3, 4, 6, 3), num_classes, in_channels)
