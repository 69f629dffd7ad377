"""The CIFAR ResNet of He et al. (2016), section 4.2.

depth = 6n + 2: a 3×3 stem, three stages of n basic blocks at 16/32/64 channels (the last two
halve the resolution), global average pooling and a linear classifier. Shortcuts are the
paper's option A: identity where shapes match, otherwise subsample and zero-pad channels, so
that ResNet20 keeps its famous ~0.27M parameters. depth=20 is ResNet20; depth=56 is the model
the original code released as "ResNet50".
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from ps_lightning.models.last_block import LastBlock, residual_last_block
from ps_lightning.models.resnet_stages import BasicBlock, kaiming_init_convs, make_stage


class PadShortcut(nn.Module):
    """Option-A shortcut: parameter-free, so the residual path adds no weights."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = planes - in_planes
        # Split the new channels evenly on both sides, as the reference implementation does.
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


def option_a_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Identity where shapes match, else the parameter-free `PadShortcut`."""
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    return PadShortcut(in_planes, planes, stride)


class CifarResNetNet(nn.Module):
    feature_dim: int = 64

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56, 110), "
                f"got {depth}"
            )
        n = (depth - 2) // 6
        self.depth = depth

        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1 = self._make_stage(16, n, stride=1)
        self.layer2 = self._make_stage(32, n, stride=2)
        self.layer3 = self._make_stage(64, n, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.feature_dim, num_classes)

        kaiming_init_convs(self)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        block = partial(BasicBlock, shortcut=option_a_shortcut)
        stage, self.in_planes = make_stage(block, self.in_planes, planes, blocks, stride)
        return stage

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)

    def last_block(self) -> LastBlock:
        return residual_last_block(
            [self.conv1, self.bn1, nn.ReLU()], [self.layer1, self.layer2, self.layer3]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))
