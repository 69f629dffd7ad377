"""Where a network's last block starts: the split that representation-level unlearning needs.

A network names it with ``last_block()``, returning ``(trunk, block)`` with
``block(trunk(x)) == forward_features(x)``; both share the network's own parameters, so
training ``block`` trains the network. The built-in LeNet5, ResNets and VGG16 name theirs.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class LastBlock(NamedTuple):
    """``trunk`` maps images to the last block's input; ``block`` maps that to the features."""

    trunk: nn.Module
    block: nn.Module


def residual_last_block(stem: list[nn.Module], stages: list[nn.Sequential]) -> LastBlock:
    """The split of a ResNet: the stem and every residual block but the last form the trunk;
    the last block, the global pooling and the flattening form the block."""
    last_stage = stages[-1]
    trunk = nn.Sequential(*stem, *stages[:-1], last_stage[:-1])
    block = nn.Sequential(last_stage[-1], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return LastBlock(trunk, block)


def split_last_block(net: nn.Module) -> LastBlock:
    """The network's ``last_block()``, or a clear refusal where it names none."""
    name_it = getattr(net, "last_block", None)
    if not callable(name_it):
        raise ValueError(
            f"{type(net).__name__} does not say where its last block starts, which method "
            "'block' retrains: give the network a method last_block() returning (trunk, block), "
            "with block(trunk(x)) equal to its features, or use method 'ps' (head only)."
        )
    trunk, block = name_it()
    return LastBlock(trunk, block)
