"""Method ``block`` inside `PSUnlearnModule`: what it keeps between Lightning's hooks (the
network's split, the cached block inputs of the retain set, the retain accuracy it stops at).
The retraining itself is `block_retrain`'s."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ps_lightning.data.loaders import same_order_loader
from ps_lightning.data.samplers import TensorSamples
from ps_lightning.models.last_block import split_last_block
from ps_lightning.prototype_surgery.block_retrain import block_accuracy, reinitialise
from ps_lightning.prototype_surgery.options import OPTIMIZERS

if TYPE_CHECKING:
    from ps_lightning.prototype_surgery.ps_module import PSUnlearnModule


class BlockRetraining:
    """The last block and the head of ``module``'s network, trainable; the rest stays frozen."""

    def __init__(self, module: PSUnlearnModule) -> None:
        self.module = module
        self.trunk, self.block = split_last_block(module.model.net)
        self.head = module.model.prototypes
        self.block.requires_grad_(True)
        self.head.requires_grad_(True)
        self.inputs: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.target: float | None = None  # the original model's retain accuracy
        # What the original model predicted for each forget sample (the result is compared).
        self.original_forget_predictions: torch.Tensor | None = None
        self.retain_acc: float | None = None  # the last epoch's

    def start(self) -> None:
        """The trunk's outputs on the retain set cached, the original's retain accuracy measured,
        the block and head drawn afresh (the head's new start recorded as the initial head,
        which a later Naive PS request on the result needs)."""
        module = self.module
        data = module.datamodule
        self.inputs, self.labels = module.extract_rows(data.eval_dataloader("retain"), self.trunk)
        self.target = self.retain_accuracy()
        self.original_forget_predictions = module.split_features("forget")["logits"].argmax(1)
        reinitialise(torch.nn.ModuleList([self.block, self.head]), data.hparams.seed)
        with torch.no_grad():
            module.model.initial_prototypes.copy_(self.head.weight)
            module.model.initial_bias.copy_(self.head.bias)

    def retain_accuracy(self) -> float:
        assert self.inputs is not None and self.labels is not None
        batch_size = self.module.datamodule.hparams.eval_batch_size
        return block_accuracy(self.block, self.head, self.inputs, self.labels, batch_size)

    def optimizer(self) -> dict[str, Any]:
        """PS's optimizer and weight decay at ``block_lr``, cosine-annealed per step."""
        hparams, data = self.module.hparams, self.module.datamodule
        params = [*self.block.parameters(), *self.head.parameters()]
        optimizer = OPTIMIZERS[hparams.optimizer](
            params, lr=hparams.block_lr, weight_decay=hparams.weight_decay
        )
        batches = math.ceil(len(data.train_indices("retain")) / data.hparams.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, hparams.block_epochs * batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def loader(self) -> DataLoader:
        assert self.inputs is not None and self.labels is not None
        data = self.module.datamodule.hparams
        return same_order_loader(
            TensorSamples(self.inputs, self.labels), data.batch_size, data.seed
        )

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(self.head(self.block(inputs)), labels)

    def reached_target(self) -> bool:
        """Whether this epoch classifies the retain set as well as the original model did
        (retrain's level; further epochs overfit the un-augmented cached inputs)."""
        assert self.target is not None
        self.retain_acc = self.retain_accuracy()
        return self.retain_acc >= self.target

    def record(self) -> dict[str, float | None]:
        return {"block_target_retain_acc": self.target, "block_retain_acc": self.retain_acc}
