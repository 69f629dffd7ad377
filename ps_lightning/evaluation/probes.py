"""Probes that look past the final layer: does the model only hide what it forgot?

- linear probe: a linear classifier trained on the model's frozen penultimate features of
  retain and held-out samples, scored on the forget samples. High accuracy means the backbone still
  separates the forgotten samples; only the head forgot.
- relearn time: fine-tuning steps on a few forget samples until the model again classifies
  the forget set as well as the original model did. Few steps mean the knowledge was hidden,
  not removed (a retrained model is the reference).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
) -> float:
    """Accuracy on ``test`` of a multinomial logistic regression fitted on ``train``."""
    # Imported here, as in `metrics.svc_attack`: only an evaluation pays for scikit-learn.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_features.double().cpu().numpy())
    probe = LogisticRegression(max_iter=500).fit(
        scaler.transform(train_features.double().cpu().numpy()), train_labels.cpu().numpy()
    )
    predicted = probe.predict(scaler.transform(test_features.double().cpu().numpy()))
    return float(np.mean(predicted == test_labels.cpu().numpy()))


@torch.no_grad()
def reaches_accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    target: float,
    batch_size: int = 512,
) -> bool:
    """Whether ``model``'s accuracy on ``inputs`` is at least ``target``, deciding as soon as
    the batches seen settle it: reached once the correct ones alone make the target, missed
    once every remaining sample being right could not. A model far below the target (a forgotten
    class: 5,000 forget samples, accuracy near 0 against a target near 0.9) is settled after a
    tenth of the set, at each of the relearn probe's up to 100 steps."""
    total = len(labels)
    correct = 0
    for start in range(0, total, batch_size):
        end = min(start + batch_size, total)
        predictions = model(inputs[start:end]).argmax(dim=1)
        correct += int((predictions == labels[start:end]).sum())
        if correct / total >= target:
            return True
        if (correct + total - end) / total < target:
            return False
    return correct / total >= target


def relearn_steps(
    model: nn.Module,
    relearn_inputs: torch.Tensor,
    relearn_labels: torch.Tensor,
    forget_inputs: torch.Tensor,
    forget_labels: torch.Tensor,
    target_accuracy: float,
    lr: float = 1e-3,
    max_steps: int = 100,
) -> int:
    """Adam steps on ``relearn_*`` (whole batch, BatchNorm in eval mode) until the accuracy on
    the forget set reaches ``target_accuracy``; ``max_steps + 1`` if it never does."""
    student = copy.deepcopy(model).eval()
    student.requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    for step in range(max_steps + 1):
        if reaches_accuracy(student, forget_inputs, forget_labels, target_accuracy):
            return step
        if step == max_steps:
            break
        with torch.enable_grad():
            optimizer.zero_grad()
            F.cross_entropy(student(relearn_inputs), relearn_labels).backward()
            optimizer.step()
    return max_steps + 1
