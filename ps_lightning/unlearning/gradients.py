"""Gradient passes over a data loader that leave the model as it was, for the methods that
weigh parameters by their gradients (SalUn's saliency mask, SSD's importances)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ps_lightning.unlearning.unlearning_module import UnlearningModule


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (BatchNorm statistics untouched) inside the block."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def summed_gradients(
    module: UnlearningModule,
    loader: DataLoader,
    transform: Callable[[torch.Tensor], torch.Tensor] = lambda grad: grad,
) -> tuple[list[torch.Tensor], int]:
    """``Σ_batches transform(∇ mean cross-entropy)`` for every parameter of ``module.model``,
    and the number of batches, both summed over processes.

    The model runs in eval mode (no BatchNorm statistic changes), in float32 without autocast,
    on the original labels and the datamodule's eval transform; no parameter is modified.
    """
    model = module.model
    params = list(model.parameters())
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    batches = 0
    with (
        eval_mode(model),
        torch.enable_grad(),
        torch.autocast(module.device.type, enabled=False),
    ):
        for images, labels in loader:
            images, labels = images.to(module.device), labels.to(module.device)
            loss = F.cross_entropy(model(module.datamodule.model_input(images)), labels)
            for total, grad in zip(sums, torch.autograd.grad(loss, params), strict=True):
                total.add_(transform(grad.float()))
            batches += 1
    reduce = module.trainer.strategy.reduce
    sums = [reduce(total, reduce_op="sum") for total in sums]
    count = reduce(torch.tensor(float(batches), device=module.device), reduce_op="sum")
    return sums, int(count)
