"""What the CIFAR ResNet and the bottleneck ResNet-50 share: stages of residual blocks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


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
