"""What the CIFAR ResNets and torchvision's ResNets share: the basic block, stages of residual
blocks, the conv init."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Callable[[int, int, int], nn.Module]


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers around a residual connection; ``shortcut(in_planes, planes,
    stride)`` builds the residual path (the families differ only there)."""

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def make_stage(
    block: Callable[[int, int, int], nn.Module],
    in_planes: int,
    planes: int,
    blocks: int,
    stride: int,
    expansion: int = 1,
) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks, the first with ``stride``; returns them and their width."""
    layers = []
    for s in [stride] + [1] * (blocks - 1):
        layers.append(block(in_planes, planes, s))
        in_planes = planes * expansion
    return nn.Sequential(*layers), in_planes


def kaiming_init_convs(module: nn.Module) -> None:
    # Default conv init is tuned for no BN/ReLU; Kaiming (fan-out, as torchvision's ResNets)
    # keeps deep ReLU stacks trainable.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
