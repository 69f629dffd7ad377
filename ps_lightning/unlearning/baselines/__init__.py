"""Peer unlearning methods on the shared `UnlearningModule` base, for comparison with PS.

Every method but SSD trains the whole network on images (`ImageUnlearningModule`); SSD
dampens parameters in closed form. All save their result in the classifier checkpoint format.
"""

from ps_lightning.unlearning.baselines.finetune import FineTune, L1Sparse
from ps_lightning.unlearning.baselines.gradient_ascent import GradientAscent
from ps_lightning.unlearning.baselines.image_module import ImageUnlearningModule
from ps_lightning.unlearning.baselines.random_label import RandomLabel, SalUn
from ps_lightning.unlearning.baselines.scrub import SCRUB
from ps_lightning.unlearning.baselines.ssd import SSD

__all__ = [
    "SCRUB",
    "SSD",
    "FineTune",
    "GradientAscent",
    "ImageUnlearningModule",
    "L1Sparse",
    "RandomLabel",
    "SalUn",
]
