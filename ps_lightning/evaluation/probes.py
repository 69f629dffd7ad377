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

from ps_lightning.metrics import accuracy


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
def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    return accuracy(model(inputs), labels)


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
        if _accuracy(student, forget_inputs, forget_labels) >= target_accuracy:
            return step
        if step == max_steps:
            break
        with torch.enable_grad():
            optimizer.zero_grad()
            F.cross_entropy(student(relearn_inputs), relearn_labels).backward()
            optimizer.step()
    return max_steps + 1
