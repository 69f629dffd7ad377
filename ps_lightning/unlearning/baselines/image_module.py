"""What the peer unlearning methods share: training the whole original network on images.

Unlike Prototype Surgery, these methods change every layer. `ImageUnlearningModule` unfreezes
the model, trains on the datamodule's loader of the split the method names (`retain`, `forget`,
`forget+retain`: one batch of each per step, or `forget-then-retain`: a forget pass then a
retain pass per epoch), puts the whole network in train mode while it trains,
runs SGD with the method's own learning rate, momentum, weight decay and epochs, and saves the
result through `UnlearningModule` in the classifier checkpoint format. A method only writes its
loss. Gradient passes in eval mode (saliency masks, Fisher importances) go through
`ps_lightning.unlearning.gradients.summed_gradients`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ps_lightning.unlearning.unlearning_module import UnlearningModule

Batch = tuple[torch.Tensor, torch.Tensor]


def batch_size(batch: Batch | dict[str, Batch]) -> int:
    if isinstance(batch, dict):
        return sum(len(labels) for _, labels in batch.values())
    return len(batch[1])


class ImageUnlearningModule(UnlearningModule):
    """Base of the methods that train the whole network on images with SGD.

    A subclass sets ``train_on`` (the split it trains on, of which `train_dataloader` asks the
    datamodule for a loader, so configs need not and cannot get it wrong) and implements
    `unlearning_loss`, or overrides `training_step` (SCRUB's max- and min-steps). A subclass
    may build another loader (SCRUB's batch sizes, RL's union pass over tensors of its own).

    Args:
        original_ckpt: the original model's checkpoint (read only; never modified).
        epochs: training epochs over the method's data (sets ``trainer.max_epochs``; the
            SalUn / l1-sparse code: 10 on CIFAR-10).
        lr: SGD learning rate (the same code: 0.01 for FT and l1-sparse, 0.013 for SalUn).
        momentum: SGD momentum.
        weight_decay: L2 weight decay, added to the gradients before any gradient mask, so
            that masked-out weights stay exactly as they are.
        num_classes: set from the data; checked against the checkpoint.
        in_channels: set from the data; checked against the checkpoint.
    """

    train_on: ClassVar[str]

    def __init__(
        self,
        original_ckpt: str,
        epochs: int = 10,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        if epochs < 0 or lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("epochs and weight_decay must be >= 0, lr > 0 and momentum in [0, 1).")
        super().__init__(original_ckpt, num_classes, in_channels)
        self.save_hyperparameters()
        # One {0, 1} tensor per parameter of `self.model`, or None: gradients outside it are
        # zeroed before every optimizer step (SalUn).
        self.gradient_mask: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ set-up
    @property
    def training_epochs(self) -> int:
        return self.hparams.epochs

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.model.requires_grad_(True)
        # Lightning keeps the mode a module enters `fit` in, and the original loads in eval
        # mode. (Gradient passes before training, e.g. SalUn's mask, use `eval_mode`.)
        self.train()

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        return self.datamodule.train_loader(self.train_on)

    def train(self, mode: bool = True) -> ImageUnlearningModule:
        # Unlike PS, these methods train the backbone: in train mode, BatchNorm statistics
        # follow the method's data, as in the methods' reference code.
        super().train(mode)
        self.model.train(mode)
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Weight decay is applied in `on_before_optimizer_step` (what SGD's own weight_decay
        # does, but before the gradient mask).
        return torch.optim.SGD(
            self.model.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        decay = self.hparams.weight_decay
        masks = self.gradient_mask or [None] * len(list(self.model.parameters()))
        for param, mask in zip(self.model.parameters(), masks, strict=True):
            if param.grad is None:
                continue
            if decay:
                param.grad.add_(param.detach(), alpha=decay)
            if mask is not None:
                param.grad.mul_(mask)

    # ------------------------------------------------------------------ training
    def cross_entropy(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of the model on a batch of (images, labels)."""
        images, labels = batch
        return F.cross_entropy(self.model(images), labels)

    def unlearning_loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.unlearning_loss(batch)
        self.log("unlearn/loss", loss, on_step=False, on_epoch=True, batch_size=batch_size(batch))
        return loss

    # ------------------------------------------------------------------ the result
    def unlearning_record(self) -> dict[str, Any]:
        record = super().unlearning_record()
        record["train_on"] = self.train_on
        return record
