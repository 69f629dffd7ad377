"""Random labels (RL) and SalUn.

RL (Golatkar et al. 2020; Hayase et al.): train on the forget samples relabelled with random
wrong classes, together with the retain samples under their true labels. Each step trains on one
forget and one retain batch (``train_on: forget+retain``; the smaller set cycles) joined into one
batch; the wrong labels are drawn afresh at every step.

SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency"): RL restricted to the salient weights. Once, before training, the gradient of the
forget loss is summed over the forget set (eval mode); the weights whose |gradient| is in the
top ``mask_ratio`` over the whole network (the paper: 50%) form the mask, and every other
weight's gradient (weight decay included) is zeroed, so those weights stay exactly as they were.
"""

from __future__ import annotations

from typing import Any

import torch

from ps_lightning.unlearning.baselines.base import Batch, ImageUnlearningModule, summed_gradients


def random_wrong_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly random class other than each label."""
    shift = torch.randint(1, num_classes, labels.shape, device=labels.device)
    return (labels + shift) % num_classes


def top_fraction_mask(scores: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """{0, 1} masks shaped like ``scores``: 1 for the ``fraction`` largest scores of all."""
    flat = torch.cat([s.flatten() for s in scores])
    keep = round(fraction * len(flat))
    selected = torch.zeros_like(flat)
    selected[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return [
        m.view_as(s)
        for m, s in zip(selected.split([s.numel() for s in scores]), scores, strict=True)
    ]


class RandomLabel(ImageUnlearningModule):
    """RL: forget samples under random wrong labels, retain samples under their own (see
    `ImageUnlearningModule` for the arguments: epochs, lr, momentum, weight_decay)."""

    train_on = "forget+retain"

    def unlearning_loss(self, batch: dict[str, Batch]) -> torch.Tensor:
        forget_images, forget_labels = batch["forget"]
        retain_images, retain_labels = batch["retain"]
        wrong = random_wrong_labels(forget_labels, self.model.hparams.num_classes)
        # One batch of both, as the reference code trains on the union: every sample weighs
        # the same, and BatchNorm sees the mixed batch.
        joined = (torch.cat([forget_images, retain_images]), torch.cat([wrong, retain_labels]))
        return self.cross_entropy(joined)


class SalUn(RandomLabel):
    """RL that trains only the weights most salient to the forget loss.

    Args:
        mask_ratio: the fraction of all weights (by |gradient| of the forget loss) that train.
        **kwargs: `ImageUnlearningModule`'s arguments (original_ckpt, epochs, lr, ...).
    """

    def __init__(self, original_ckpt: str, mask_ratio: float = 0.5, **kwargs: Any) -> None:
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}.")
        super().__init__(original_ckpt, **kwargs)

    def on_fit_start(self) -> None:
        gradients, _ = summed_gradients(self, self.datamodule.eval_dataloader("forget"))
        saliency = [g.abs() for g in gradients]
        self.gradient_mask = top_fraction_mask(saliency, self.hparams.mask_ratio)
