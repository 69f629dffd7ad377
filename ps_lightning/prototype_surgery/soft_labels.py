"""Soft labels of Prototype Surgery (docs/design.md §3) and the soft-target loss, over plain
tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_labels(logits: torch.Tensor, labels: torch.Tensor, top_k: int = 2) -> torch.Tensor:
    """Targets that move each forget sample's mass from its true class to its runner-ups.

    Per sample: the true class ``y`` is removed (its logit becomes −∞); among the other classes
    the ``top_k`` with the largest logits receive ``z[y]`` in proportion to the softmax of their
    own logits; the target is the softmax of the result, so ``y`` gets exactly zero mass.
    The runner-ups are chosen among classes other than ``y`` (the original code could pick
    ``y`` itself); with fewer than ``top_k`` other classes, all of them share.

    Args:
        logits: N×C logits of the original model on the forget samples.
        labels: N true labels.
        top_k: how many runner-up classes inherit the true class's logit (the paper: 2).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError("soft labels need at least two classes.")
    k = min(top_k, num_classes - 1)
    z = logits.detach().float()
    true_logit = z.gather(1, labels[:, None])
    without_true = z.scatter(1, labels[:, None], float("-inf"))
    top_logits, top_classes = without_true.topk(k, dim=1)
    shares = torch.softmax(top_logits, dim=1)
    shifted = without_true.scatter_add(1, top_classes, true_logit * shares)
    return torch.softmax(shifted, dim=1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` against probability ``targets`` (rows sum to 1)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def paper_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The PS loss of the reference code: ``nn.CrossEntropyLoss`` applied to the *softmax* of
    the logits against probability targets, i.e. a softmax taken twice (link4sourcecode/
    PS-Unlearning, ``PS-Unlearning/utils/models.py``, ``FT_relabel``: ``outputs =
    torch.softmax(outputs, dim=1); loss(outputs, labels)``)."""
    return soft_cross_entropy(torch.softmax(logits, dim=1), targets)
