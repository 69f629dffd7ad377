"""Unlearning methods (LightningModules) and the surgery mathematics they use (plain tensors)."""

from ps_lightning.unlearning.base import UnlearningModule
from ps_lightning.unlearning.baselines import (
    SCRUB,
    SSD,
    FineTune,
    GradientAscent,
    ImageUnlearningModule,
    L1Sparse,
    RandomLabel,
    SalUn,
)
from ps_lightning.unlearning.prototype_surgery import PSUnlearnModule

__all__ = [
    "SCRUB",
    "SSD",
    "FineTune",
    "GradientAscent",
    "ImageUnlearningModule",
    "L1Sparse",
    "PSUnlearnModule",
    "RandomLabel",
    "SalUn",
    "UnlearningModule",
]
