"""Random labels (RL) and SalUn, as in OPTML-Group/Unlearn-Saliency,
``Classification/unlearn/RL.py`` (run each epoch by ``iterative_unlearn``,
``Classification/unlearn/impl.py``).

RL (Golatkar et al. 2020; Hayase et al.): forget samples are trained on under labels drawn with
``randint(0, C)`` (the true label may come up), retain samples under their own, one SGD step per
batch. RL.py picks one of two loops by the dataset's name:

- ``if args.dataset == "cifar100" or args.dataset == "TinyImagenet"``: one shuffled pass over
  ``ConcatDataset([forget_dataset, retain_dataset])`` per epoch, in batches of
  ``args.batch_size``, the forget samples' labels drawn once per epoch
  (``forget_dataset.targets = np.random.randint(0, args.num_classes, ...)`` on a fresh copy of
  the forget set): here ``passes: union``, which ``configs/cifar100`` and
  ``configs/tinyimagenet`` set.
- ``elif args.dataset == "cifar10" or args.dataset == "svhn"``: a whole pass over the forget
  loader under labels drawn afresh for every batch (``torch.randint(0, args.num_classes,
  target.shape)``), then a whole pass over the retain loader: here ``passes: sequential``
  (``train_on: forget-then-retain``), the class default.
- Any other name (the repository's ``imagenet``, ``cifar10_no_val``, ``cifar100_no_val``) runs
  neither loop and fails at ``return top1.avg``. This project's other datasets (digits, MNIST,
  Fashion-MNIST) run the CIFAR-10 / SVHN loop, the class default.

The union pass is a loader of RL's own over every training sample with its label and its row
in the forget set, shuffled in one seeded order (every process takes every batch, so DDP
averages identical gradients); its images are made model input in the step, as the datamodule
does for its loaders' batches. The forget labels of the epoch are drawn at its start, on global
rank 0, and broadcast.

SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency"): RL restricted to the salient weights. Once, before training, the gradient of the
forget loss is summed over the forget set (eval mode); the weights whose |gradient| is in the
top ``mask_ratio`` over the whole network (the paper: 50%) form the mask, and every other
weight's gradient (weight decay included) is zeroed, so those weights stay exactly as they were
(RL.py: ``_apply_mask_to_grads``, then ``_restore_masked_params``). The reference's CIFAR-10
run (``Classification/README.md``): lr 0.013, 10 epochs.

Options that deviate from the reference (defaults are the reference's CIFAR-10 loop):
``passes: joint`` (one forget and one retain batch joined per step, the shorter set cycling)
and ``labels: wrong`` (never the true label).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from ps_lightning.data.loaders import same_order_loader
from ps_lightning.data.samplers import TensorSamples
from ps_lightning.unlearning.baselines.image_module import (
    Batch,
    ImageUnlearningModule,
)
from ps_lightning.unlearning.gradients import summed_gradients

# passes → the split trained on (union: every training sample, in a loader of RL's own whose
# batches also name each sample's forget row).
PASSES = {"sequential": "forget-then-retain", "joint": "forget+retain", "union": "full"}
LABELS = ("any", "wrong")


def random_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly random class for each label, the true one included (``randint(0, C)``)."""
    return torch.randint(0, num_classes, labels.shape, device=labels.device)


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
    """RL: forget samples under random labels, retain samples under their own.

    Args:
        original_ckpt: the original model's checkpoint.
        passes: ``sequential`` (RL.py's CIFAR-10 / SVHN loop: a forget pass, then a retain pass,
            per epoch), ``union`` (its CIFAR-100 / TinyImageNet loop: one shuffled pass over
            forget ∪ retain, forget labels drawn once per epoch) or ``joint`` (one forget and
            one retain batch joined per step).
        labels: ``any`` (the reference's ``randint(0, C)``) or ``wrong`` (never the true one).
        **kwargs: `ImageUnlearningModule`'s arguments (epochs, lr, momentum, weight_decay).
    """

    def __init__(
        self,
        original_ckpt: str,
        passes: Literal["sequential", "joint", "union"] = "sequential",
        labels: Literal["any", "wrong"] = "any",
        **kwargs: Any,
    ) -> None:
        if passes not in PASSES or labels not in LABELS:
            raise ValueError(
                f"passes={passes!r} must be one of {tuple(PASSES)} and labels={labels!r} one of "
                f"{LABELS}."
            )
        super().__init__(original_ckpt, **kwargs)
        # passes: union — this epoch's label of each forget sample (by forget row).
        self.epoch_forget_labels: torch.Tensor | None = None

    @property
    def train_on(self) -> str:  # type: ignore[override]
        return PASSES[self.hparams.passes]

    def forget_labels(self, labels: torch.Tensor) -> torch.Tensor:
        draw = random_labels if self.hparams.labels == "any" else random_wrong_labels
        return draw(labels, self.model.hparams.num_classes)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """For ``passes: union``: every training sample (forget ∪ retain), its label, and its
        row in the forget set (-1: a retain sample), in one seeded order on every process;
        otherwise the datamodule's loader of ``train_on``."""
        if self.hparams.passes != "union":
            return super().train_dataloader()
        data = self.datamodule
        images, labels = data.samples("full").tensors
        forget_rows = torch.full((len(labels),), -1, dtype=torch.long)
        forget_rows[data.forget_indices] = torch.arange(len(data.forget_indices))
        samples = TensorSamples(images, labels, forget_rows)
        return same_order_loader(samples, data.hparams.batch_size, data.hparams.seed)

    def on_train_epoch_start(self) -> None:
        if self.hparams.passes != "union":
            return
        # As RL.py: a random label per forget sample, drawn once for the whole epoch; one draw
        # for all processes, which all train on every batch.
        _, labels = self.datamodule.samples("full").tensors
        true_labels = labels[self.datamodule.forget_indices].to(self.device)
        drawn = self.forget_labels(true_labels) if self.trainer.is_global_zero else true_labels
        self.epoch_forget_labels = self.trainer.strategy.broadcast(drawn, src=0)

    def unlearning_loss(
        self, batch: dict[str, Batch] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        if self.hparams.passes == "union":
            images, labels, forget_rows = batch
            # This loader is RL's own: its images arrive as stored, uint8, on the device.
            images = self.datamodule.model_input(
                images, augment_batch=self.datamodule.hparams.augment
            )
            assert self.epoch_forget_labels is not None
            drawn = self.epoch_forget_labels[forget_rows.clamp(min=0)]
            return self.cross_entropy((images, torch.where(forget_rows >= 0, drawn, labels)))
        if self.hparams.passes == "joint":
            forget_images, forget_labels = batch["forget"]
            retain_images, retain_labels = batch["retain"]
            # One batch of both: every sample weighs the same, BatchNorm sees the mixed batch.
            images = torch.cat([forget_images, retain_images])
            labels = torch.cat([self.forget_labels(forget_labels), retain_labels])
            return self.cross_entropy((images, labels))
        ((part, (images, labels)),) = batch.items()
        if part == "forget":
            labels = self.forget_labels(labels)
        return self.cross_entropy((images, labels))


class SalUn(RandomLabel):
    """RL that trains only the weights most salient to the forget loss.

    Args:
        original_ckpt: the original model's checkpoint.
        mask_ratio: the fraction of all weights (by |gradient| of the forget loss) that train.
        epochs: as the reference's CIFAR-10 run (10).
        lr: as the reference's CIFAR-10 run (0.013).
        **kwargs: `RandomLabel`'s and `ImageUnlearningModule`'s other arguments.
    """

    def __init__(
        self,
        original_ckpt: str,
        mask_ratio: float = 0.5,
        epochs: int = 10,
        lr: float = 0.013,
        **kwargs: Any,
    ) -> None:
        if not 0 < mask_ratio <= 1:
            raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}.")
        super().__init__(original_ckpt, epochs=epochs, lr=lr, **kwargs)

    def on_fit_start(self) -> None:
        gradients, _ = summed_gradients(self, self.datamodule.eval_dataloader("forget"))
        saliency = [g.abs() for g in gradients]
        self.gradient_mask = top_fraction_mask(saliency, self.hparams.mask_ratio)
