"""The unlearning methods' shared base and the peer methods (LightningModules); Prototype Surgery
lives in `ps_lightning.prototype_surgery`."""

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
from ps_lightning.unlearning.unlearning_module import UnlearningModule

__all__ = [
    "SCRUB",
    "SSD",
    "FineTune",
    "GradientAscent",
    "ImageUnlearningModule",
    "L1Sparse",
    "RandomLabel",
    "SalUn",
    "UnlearningModule",
]
