"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"), as in
meghdadk/SCRUB: the loop of ``scrub.py``, the defaults of its notebooks' ``args``.

The teacher is the frozen original model, the student is the model being unlearned. Each of the
first ``max_step_epochs`` epochs makes one whole pass over the forget set of *max-steps*, which
push the student away from the teacher (maximise ``KL(teacher ‖ student)`` at temperature T),
then every epoch makes one whole pass over the retain set of *min-steps*, which keep it close
to the teacher and to the labels (``ce_weight · CE + kl_weight · KL``); ``train_on:
forget-then-retain`` serves the two passes in that order, one optimizer step per batch.
The reference's defaults: SGD lr 5e-4, momentum 0.9, weight decay 5e-4, T = 4, γ (ce_weight)
0.99, α (kl_weight) 0.001, msteps (max_step_epochs) 2 of 3 epochs, forget batches of 32
(``del_batch_size``), retain batches of 128 (``sgda_batch_size``), and no augmentation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from ps_lightning.unlearning.baselines.image_module import Batch, ImageUnlearningModule


def distillation_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``KL(softmax(teacher/T) ‖ softmax(student/T)) · T²``, averaged over the batch."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * temperature**2
    )


class SCRUB(ImageUnlearningModule):
    """SCRUB: a student pushed away from the original model on the forget set, held to it on
    the retain set.

    Args:
        original_ckpt: the original model's checkpoint (also the teacher).
        epochs: epochs (each: one pass of min-steps over the retain set).
        lr: SGD learning rate of both kinds of step.
        max_step_epochs: the first epochs that also make a pass of max-steps over the forget
            set (the paper's msteps).
        temperature: distillation temperature T.
        ce_weight: weight γ of the retain cross-entropy in a min-step.
        kl_weight: weight α of the retain KL to the teacher in a min-step.
        forget_batch_size: the batch size of the max-step pass.
        retain_batch_size: the batch size of the min-step pass.
        train_augmentation: train on augmented images (the reference does not).
        **kwargs: `ImageUnlearningModule`'s other arguments (momentum, weight_decay).
    """

    train_on = "forget-then-retain"

    def __init__(
        self,
        original_ckpt: str,
        epochs: int = 3,
        lr: float = 5e-4,
        max_step_epochs: int = 2,
        temperature: float = 4.0,
        ce_weight: float = 0.99,
        kl_weight: float = 0.001,
        forget_batch_size: int = 32,
        retain_batch_size: int = 128,
        train_augmentation: bool = False,
        **kwargs: Any,
    ) -> None:
        if max_step_epochs < 0 or temperature <= 0 or ce_weight < 0 or kl_weight < 0:
            raise ValueError(
                "max_step_epochs, ce_weight and kl_weight must be >= 0, temperature > 0."
            )
        if forget_batch_size < 1 or retain_batch_size < 1:
            raise ValueError("forget_batch_size and retain_batch_size must be positive.")
        super().__init__(original_ckpt, epochs=epochs, lr=lr, **kwargs)
        self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SCRUB:
        super().train(mode)
        self.teacher.eval()  # the teacher is the original model: never in train mode
        return self

    def student_logits_and_kl(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's logits and its distillation KL to the teacher on ``images``."""
        logits = self.model(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return logits, distillation_kl(logits, teacher_logits, self.hparams.temperature)

    def part_batch_sizes(self) -> dict[str, int]:
        return {
            "forget": self.hparams.forget_batch_size,
            "retain": self.hparams.retain_batch_size,
        }

    @property
    def augment_training(self) -> bool:
        # Asked by the datamodule (`ChoosesAugmentation`): the reference trains unaugmented.
        return self.hparams.train_augmentation

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> torch.Tensor | None:
        ((part, (images, labels)),) = batch.items()
        if part == "forget":
            if self.current_epoch >= self.hparams.max_step_epochs:
                return None  # past msteps: the forget pass makes no step
            _, forget_kl = self.student_logits_and_kl(images)
            self.log(
                "unlearn/forget_kl", forget_kl, on_step=False, on_epoch=True, batch_size=len(labels)
            )
            return -forget_kl
        logits, kl = self.student_logits_and_kl(images)
        loss = (
            self.hparams.ce_weight * F.cross_entropy(logits, labels) + self.hparams.kl_weight * kl
        )
        self.log("unlearn/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss
