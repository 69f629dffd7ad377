"""The choices of `PSUnlearnModule`'s options."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ps_lightning.prototype_surgery.soft_labels import paper_cross_entropy, soft_cross_entropy

# The choices of the options, typed so that `--help` lists them and the CLI refuses others;
# the tuples check the same choices for callers that build the module in Python.
SurgeryMethod = Literal["naive", "ps", "naive+ps", "block", "auto"]
Trainable = Literal["bias", "weight", "weight+bias"]
EarlyStop = Literal["off", "on", "auto"]
AnchorTarget = Literal["labels", "outputs"]
LossName = Literal["soft", "paper"]
OptimizerName = Literal["adam", "sgd"]
SURGERY_METHODS: tuple[str, ...] = get_args(SurgeryMethod)
# The methods that run Naive PS (and need the head's initial weights), and those that change
# the head alone (they never read the block options below).
NAIVE_METHODS = ("naive", "naive+ps")
HEAD_METHODS = (*NAIVE_METHODS, "ps")
# Read by method block (and auto) alone.
BLOCK_OPTIONS = (
    "block_epochs",
    "block_lr",
    "block_batch_size",
    "block_min_steps",
    "block_stop_rows",
)
# Block options added after steps were keyed, and the value that does what every step did
# before them.
BLOCK_OPTIONS_ADDED = dict.fromkeys(("block_batch_size", "block_min_steps", "block_stop_rows"))
TRAINABLE: tuple[str, ...] = get_args(Trainable)
EARLY_STOP: tuple[str, ...] = get_args(EarlyStop)
ANCHOR_TARGETS: tuple[str, ...] = get_args(AnchorTarget)
LOSSES = {"soft": soft_cross_entropy, "paper": paper_cross_entropy}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}

# Why Naive PS refuses a request that empties a class (retain accuracy against retrain's:
# digits 0.802 / 0.998, Fashion-MNIST 0.832-0.911 / 0.93, CIFAR-10 0.774 / 0.820;
# docs/unlearning.md).
NAIVE_WHOLE_CLASS = (
    "method 'naive' refuses a whole-class request: with every sample of a class gone its "
    "prototype has no support left, and the closed form cost the other classes 2-20 points of "
    "retain accuracy (digits, Fashion-MNIST, CIFAR-10); use method 'ps' or 'auto', which forget "
    "the class and keep the rest."
)
