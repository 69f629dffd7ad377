"""Selective Synaptic Dampening (SSD; Foster et al. 2024, "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening").

No training: the diagonal of the Fisher information (the mean over batches of the squared
gradient of the batch cross-entropy, eval mode, batches of 128) is computed on the forget set,
``I_f``, and on the reference data, ``I_D`` (the whole training set in the authors' code, or the
retain set). Every parameter with ``I_f > alpha · I_D`` is multiplied by ``min(lambda · I_D /
I_f, 1)``; the others, and every buffer (BatchNorm statistics), stay exactly as they were. The
authors' defaults: alpha (selection weighting) 10, lambda (dampening constant) 1. Reference:
if-loops/selective-synaptic-dampening, ``src/ssd.py`` (``ParameterPerturber``:
``calc_importance``, ``modify_weight``) and ``src/forget_random_main.py``, whose importance
loaders have batches of 128 (``forget_train_dl = DataLoader(list(forget_train),
batch_size=128)``; ``full_train_dl`` at ``-b``, default 128, which its script
``src/cifar10_random_exps.sh`` leaves); the class default. Its class and sub-class scripts
(``forget_full_class_main.py``, ``forget_subclass_main.py``) build both at ``-b``, whose
default there is 64.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ps_lightning.unlearning.gradients import summed_gradients
from ps_lightning.unlearning.unlearning_module import UnlearningModule

REFERENCES = ("full", "retain")


def dampening_factors(
    forget_importance: torch.Tensor, reference_importance: torch.Tensor, alpha: float, lam: float
) -> torch.Tensor:
    """SSD's multiplier per parameter: ``min(lam · I_D / I_f, 1)`` where ``I_f > alpha · I_D``,
    else exactly 1."""
    selected = forget_importance > alpha * reference_importance
    ratio = lam * reference_importance / torch.where(selected, forget_importance, 1.0)
    return torch.where(selected, ratio.clamp(max=1.0), 1.0)


class SSD(UnlearningModule):
    """Dampen the parameters far more important to the forget set than to the reference data.

    Args:
        original_ckpt: the original model's checkpoint (read only; never modified).
        alpha: selection weighting: a parameter is dampened when its forget importance exceeds
            ``alpha`` times its reference importance.
        lam: dampening constant lambda.
        reference: the data of the reference importance: ``full`` (the training set, as the
            authors' code) or ``retain``.
        importance_batch_size: the batch size of both importance passes. An importance is a
            mean of squared *batch* gradients, so it depends on it (the authors: 128).
        num_classes: set from the data; checked against the checkpoint.
        in_channels: set from the data; checked against the checkpoint.
    """

    def __init__(
        self,
        original_ckpt: str,
        alpha: float = 10.0,
        lam: float = 1.0,
        reference: Literal["full", "retain"] = "full",
        importance_batch_size: int = 128,
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        if reference not in REFERENCES:
            raise ValueError(f"reference={reference!r} is not one of {REFERENCES}.")
        if alpha <= 0 or lam <= 0 or importance_batch_size < 1:
            raise ValueError("alpha, lam and importance_batch_size must be > 0.")
        super().__init__(original_ckpt, num_classes, in_channels)
        self.save_hyperparameters()
        self.dampened_fraction = 0.0

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Gradients are taken (never stepped); DDP also needs a parameter that requires one.
        self.model.requires_grad_(True)

    def configure_optimizers(self) -> None:
        return None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        raise RuntimeError("SSD has no training steps.")

    def importance(self, split: str) -> list[torch.Tensor]:
        loader = self.datamodule.eval_dataloader(split, self.hparams.importance_batch_size)
        squares, batches = summed_gradients(self, loader, transform=torch.square)
        return [s / max(batches, 1) for s in squares]

    @torch.no_grad()
    def on_fit_start(self) -> None:
        forget = self.importance("forget")
        reference = self.importance(self.hparams.reference)
        dampened, total = 0, 0
        for param, f_imp, r_imp in zip(self.model.parameters(), forget, reference, strict=True):
            factor = dampening_factors(f_imp, r_imp, self.hparams.alpha, self.hparams.lam)
            param.mul_(factor.to(param.dtype))
            dampened += int((factor < 1).sum())
            total += factor.numel()
        self.dampened_fraction = dampened / total

    def unlearning_record(self) -> dict[str, Any]:
        record = super().unlearning_record()
        record["dampened_fraction"] = self.dampened_fraction
        return record
