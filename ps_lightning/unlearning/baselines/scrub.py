"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"), as in meghdadk/SCRUB,
``large_scale_unlearning.ipynb`` (the notebook's loaders, ``args`` and epoch loop) with
``thirdparty/repdistiller/helper/loops.py`` (``train_distill``, one epoch of max- or
min-steps) and ``thirdparty/repdistiller/helper/util.py`` (``adjust_learning_rate``).

The teacher is the frozen original model, the student is the model being unlearned. Each of the
first ``max_step_epochs`` epochs makes one whole pass over the forget set of *max-steps*, which
push the student away from the teacher (maximise ``KL(teacher ‖ student)`` at temperature T),
then every epoch makes one whole pass over the retain set of *min-steps*, which keep it close
to the teacher and to the labels (``ce_weight · CE + kl_weight · KL``); ``train_on:
forget-then-retain`` serves the two passes in that order, one optimizer step per batch, one SGD
optimizer (and its momentum) for both.

The reference's values: SGD lr 5e-4 (``sgda_learning_rate``), momentum 0.9, weight decay 5e-4,
T = 4 (``kd_T``), γ (ce_weight) 0.99, α (kl_weight) 0.001, 3 epochs (``sgda_epochs``) with
max-steps in the first 2 (``msteps``; ``if epoch <= args.msteps`` for epochs counted from 1),
no augmentation, forget batches of 512 and retain batches of 256 (the batch sizes the notebook
builds ``forget_loader`` and ``retain_loader`` with; its ``del_batch_size`` 32 and
``sgda_batch_size`` 128 are set but never read), and at the start of every epoch the learning
rate ``lr · lr_decay_rate ** #{d in lr_decay_epochs : epoch > d}`` for epochs counted from 1
(``lr_decay_epochs`` [3, 5, 9], ``lr_decay_rate`` 0.1): no decay in 3 epochs, lr / 10 in
epochs 4 and 5, lr / 100 in epochs 6 to 9, lr / 1000 from epoch 10.

Options that deviate from the reference (defaults are the reference's): other batch sizes, an
empty ``lr_decay_epochs`` (a constant learning rate), ``train_augmentation``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

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


def decayed_learning_rate(
    lr: float, epoch: int, decay_epochs: tuple[int, ...], decay_rate: float
) -> float:
    """repdistiller's ``adjust_learning_rate`` for ``epoch`` counted from 0: ``lr ·
    decay_rate ** #{d in decay_epochs : epoch + 1 > d}`` (the reference counts from 1)."""
    decays = sum(epoch + 1 > d for d in decay_epochs)
    return lr * decay_rate**decays


class SCRUB(ImageUnlearningModule):
    """SCRUB: a student pushed away from the original model on the forget set, held to it on
    the retain set.

    Args:
        original_ckpt: the original model's checkpoint (also the teacher).
        epochs: epochs (each: one pass of min-steps over the retain set).
        lr: SGD learning rate of both kinds of step, before any decay.
        max_step_epochs: the first epochs that also make a pass of max-steps over the forget
            set (the paper's msteps).
        temperature: distillation temperature T.
        ce_weight: weight γ of the retain cross-entropy in a min-step.
        kl_weight: weight α of the retain KL to the teacher in a min-step.
        forget_batch_size: the batch size of the max-step pass.
        retain_batch_size: the batch size of the min-step pass.
        lr_decay_epochs: the learning rate is multiplied by ``lr_decay_rate`` once for each of
            these that the epoch (counted from 1) exceeds; empty: a constant learning rate.
        lr_decay_rate: the factor of each decay.
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
        forget_batch_size: int = 512,
        retain_batch_size: int = 256,
        lr_decay_epochs: tuple[int, ...] = (3, 5, 9),
        lr_decay_rate: float = 0.1,
        train_augmentation: bool = False,
        **kwargs: Any,
    ) -> None:
        if max_step_epochs < 0 or temperature <= 0 or ce_weight < 0 or kl_weight < 0:
            raise ValueError(
                "max_step_epochs, ce_weight and kl_weight must be >= 0, temperature > 0."
            )
        if forget_batch_size < 1 or retain_batch_size < 1:
            raise ValueError("forget_batch_size and retain_batch_size must be positive.")
        if lr_decay_rate <= 0 or any(d < 0 for d in lr_decay_epochs):
            raise ValueError("lr_decay_rate must be > 0 and lr_decay_epochs >= 0.")
        super().__init__(original_ckpt, epochs=epochs, lr=lr, **kwargs)
        self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SCRUB:
        super().train(mode)
        self.teacher.eval()  # the teacher is the original model: never in train mode
        return self

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (counted from 0)."""
        return decayed_learning_rate(
            self.hparams.lr,
            epoch,
            tuple(self.hparams.lr_decay_epochs),
            self.hparams.lr_decay_rate,
        )

    def on_train_epoch_start(self) -> None:
        # As the reference's `adjust_learning_rate` at the start of each epoch (also on resume).
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.learning_rate(self.current_epoch)

    def student_logits_and_kl(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's logits and its distillation KL to the teacher on ``images``."""
        logits = self.model(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return logits, distillation_kl(logits, teacher_logits, self.hparams.temperature)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        # The reference's own loaders: its batch sizes, and unaugmented images unless asked.
        batch_sizes = {
            "forget": self.hparams.forget_batch_size,
            "retain": self.hparams.retain_batch_size,
        }
        augment = self.hparams.train_augmentation
        return self.datamodule.train_loader(self.train_on, batch_sizes, augment=augment)

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
