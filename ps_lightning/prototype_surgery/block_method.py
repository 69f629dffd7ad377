"""Method ``block`` inside `PSUnlearnModule`: what it keeps between Lightning's hooks (the
network's split, the cached block inputs of the retain set, the retain accuracy it stops at).
The retraining itself is `block_retrain`'s."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ps_lightning.data.loaders import same_order_loader
from ps_lightning.data.samplers import TensorSamples
from ps_lightning.models.last_block import split_last_block
from ps_lightning.prototype_surgery.block_retrain import block_accuracy, reinitialise, stop_rows
from ps_lightning.prototype_surgery.options import OPTIMIZERS

if TYPE_CHECKING:
    from ps_lightning.prototype_surgery.ps_module import PSUnlearnModule

# Where the block's optimizer updates every tensor in one fused kernel: on a CPU the per-tensor
# loop of Adam took a sixth of a step (LeNet5's hidden layers in batches of 1,024, one thread:
# 3.4 ms a step against 2.9 ms fused; benchmarks/block_speed.py). Not with gradient clipping:
# Lightning's mixed-precision plugin refuses to clip for a fused optimizer.
FUSED_DEVICES = ("cpu", "cuda")


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
        self.stop_rows: torch.Tensor | None = None  # the retain rows the stop is judged on
        self.target: float | None = None  # the original model's retain accuracy
        self.original: torch.nn.ModuleList | None = None  # the original's block and head
        self.retain_acc: float | None = None  # the last epoch's

    def start(self) -> None:
        """The trunk's outputs on the retain set cached, the original's retain accuracy measured,
        the block and head drawn afresh (the head's new start recorded as the initial head,
        which a later Naive PS request on the result needs)."""
        module = self.module
        data = module.datamodule
        self.inputs, self.labels = module.extract_rows(data.eval_dataloader("retain"), self.trunk)
        sample = module.hparams.block_stop_rows
        self.stop_rows = stop_rows(len(self.labels), sample, data.hparams.seed)
        self.target = self.retain_accuracy()
        self.original = copy.deepcopy(torch.nn.ModuleList([self.block, self.head])).eval()
        reinitialise(torch.nn.ModuleList([self.block, self.head]), data.hparams.seed)
        with torch.no_grad():
            module.model.initial_prototypes.copy_(self.head.weight)
            module.model.initial_bias.copy_(self.head.bias)

    @torch.no_grad()
    def original_forget_predictions(self) -> torch.Tensor:
        """What the original model predicted for each forget sample (the API counts the changed
        predictions), asked for after the fit so that the fit never pays for it."""
        assert self.original is not None
        block, head = self.original
        loader = self.module.datamodule.eval_dataloader("forget")
        inputs, _ = self.module.extract_rows(loader, self.trunk)
        return head(block(inputs)).argmax(1)

    def retain_accuracy(self) -> float:
        assert self.inputs is not None and self.labels is not None
        batch_size = self.module.datamodule.hparams.eval_batch_size
        return block_accuracy(
            self.block, self.head, self.inputs, self.labels, batch_size, self.stop_rows
        )

    def optimizer(self) -> dict[str, Any]:
        """PS's optimizer and weight decay at ``block_lr``, cosine-annealed per step."""
        hparams = self.module.hparams
        params = [*self.block.parameters(), *self.head.parameters()]
        optimizer = OPTIMIZERS[hparams.optimizer](
            params,
            lr=hparams.block_lr,
            weight_decay=hparams.weight_decay,
            fused=params[0].device.type in FUSED_DEVICES
            and not self.module.trainer.gradient_clip_val,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, self.epochs * self.batches_per_epoch
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @property
    def batch_size(self) -> int:
        return self.module.hparams.block_batch_size or self.module.datamodule.hparams.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.module.datamodule.train_indices("retain")) / self.batch_size)

    @property
    def epochs(self) -> int:
        """``block_epochs``, or as many epochs as ``block_min_steps`` steps take where that is
        more (a small retain set gives few steps an epoch)."""
        hparams = self.module.hparams
        steps = hparams.block_min_steps or 0
        return max(hparams.block_epochs, math.ceil(steps / self.batches_per_epoch))

    def loader(self) -> DataLoader:
        assert self.inputs is not None and self.labels is not None
        return same_order_loader(
            TensorSamples(self.inputs, self.labels),
            self.batch_size,
            self.module.datamodule.hparams.seed,
        )

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, labels = batch
        return F.cross_entropy(self.head(self.block(inputs)), labels)

    def reached_target(self) -> bool:
        """Whether this epoch classifies the retain set (its stop rows) as well as the original
        model did (retrain's level; further epochs overfit the un-augmented cached inputs)."""
        assert self.target is not None
        self.retain_acc = self.retain_accuracy()
        return self.retain_acc >= self.target

    def record(self) -> dict[str, float | int | None]:
        return {
            "block_target_retain_acc": self.target,
            "block_retain_acc": self.retain_acc,
            "block_steps": self.module.global_step,
        }
