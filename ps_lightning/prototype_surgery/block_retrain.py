"""Method ``block``: the network's last block and its head retrained from a fresh start on the
retain set's cached block inputs, so that no forget sample ever reaches them.

PS changes the head alone, and a head cannot forget what the features keep: after PS on a whole
class a fresh linear probe on its features still recognises the class (Fashion-MNIST class 1:
0.984 against retrain's 0.924), and on a random request every head-only change tried lowered
retain and test accuracy before it lowered forget accuracy. Retraining the last block on the
retain set is exact for that block given the frozen trunk below it: the idea of EU-k (Goel et
al. 2022, "Towards Adversarial Evaluation of Machine Unlearning", reference code
meghdadk/SCRUB `MIA_experiments.ipynb`, which retrains the last k layers with SGD for a fixed
number of epochs). Here the trunk runs once (its outputs are cached), the optimiser is Adam on a
cosine schedule, and training stops as soon as the retrained block classifies the retain set
as well as the original did: a retrained model keeps the original's retain accuracy, and
training beyond it overfits the un-augmented cached inputs (Fashion-MNIST, seeds 0-2: 20 epochs
raised retain accuracy 2 points above retrain's). docs/unlearning.md has the measurements.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ps_lightning.metrics import accuracy


def reinitialise(module: nn.Module, seed: int) -> None:
    """Every layer of ``module`` back to a fresh default initialisation, drawn from ``seed``
    without touching the caller's random state (BatchNorm statistics are reset too)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()


def stop_rows(count: int, size: int | None, seed: int) -> torch.Tensor | None:
    """The rows of ``count`` cached inputs that the stop is judged on: ``None`` for all of them,
    or a fixed random ``size`` of them drawn from ``seed`` (in order), the same every epoch."""
    if size is None or count <= size:
        return None
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


@torch.no_grad()
def block_accuracy(
    block: nn.Module,
    head: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    rows: torch.Tensor | None = None,
) -> float:
    """Accuracy of ``head(block(inputs))`` over ``rows`` of them (default: all), with ``block``
    in eval mode (its mode is restored)."""
    # Views of the inputs where every row counts; copies of the sampled rows else.
    if rows is None:
        batches: Iterable[torch.Tensor] = inputs.split(batch_size)
    else:
        batches = (inputs[part] for part in rows.split(batch_size))
        labels = labels[rows]
    was_training = block.training
    block.eval()
    try:
        logits = torch.cat([head(block(batch.to(head.weight.device))) for batch in batches])
    finally:
        block.train(was_training)
    return accuracy(logits, labels.to(logits.device))
