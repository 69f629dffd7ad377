"""Gradient ascent (GA, also NegGrad; Thudi et al. 2022, Graves et al. 2021): ascend the
cross-entropy on the forget set. Unbounded, so it runs for few epochs at a small learning rate
(the SalUn and l1-sparse code: 5 epochs at lr 1e-4 on CIFAR-10). As in
OPTML-Group/Unlearn-Saliency, ``Classification/unlearn/GA.py``: one pass over the forget set per
epoch, one SGD step per batch."""

from __future__ import annotations

from typing import Any

import torch

from ps_lightning.unlearning.baselines.image_module import Batch, ImageUnlearningModule


class GradientAscent(ImageUnlearningModule):
    """GA: the negated cross-entropy of the forget samples' true labels, minimised.

    Args:
        original_ckpt: the original model's checkpoint.
        epochs: epochs over the forget set.
        lr: SGD learning rate.
        **kwargs: `ImageUnlearningModule`'s other arguments (momentum, weight_decay).
    """

    train_on = "forget"

    def __init__(
        self, original_ckpt: str, epochs: int = 5, lr: float = 1e-4, **kwargs: Any
    ) -> None:
        super().__init__(original_ckpt, epochs=epochs, lr=lr, **kwargs)

    def unlearning_loss(self, batch: Batch) -> torch.Tensor:
        return -self.cross_entropy(batch)
