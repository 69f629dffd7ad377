"""What users of unlearning measure (DESIGN §4), as plain functions over logits and labels."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

# The metrics averaged into "Avg. Gap" to the retrained model (as in the SalUn line of work:
# forget, retain and test accuracy and MIA-efficacy).
GAP_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_confidence")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean())


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    correct = (logits.argmax(dim=1) == labels).float()
    hits = torch.zeros(num_classes).index_add_(0, labels.cpu(), correct.cpu())
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return [float(h / c) if c > 0 else float("nan") for h, c in zip(hits, counts, strict=True)]


def true_class_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=1).gather(1, labels[:, None]).flatten()


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def mia_efficacy(
    member_scores: torch.Tensor,
    nonmember_scores: torch.Tensor,
    target_scores: torch.Tensor,
    seed: int = 0,
) -> float:
    """Share of the target (forget) samples that an attack calls non-members.

    The attack is a logistic regression on one score per sample, trained on members (retain
    samples) against non-members (held-out samples), with balanced classes: members are
    subsampled to the non-members' count so that a constant guess cannot score well.
    """
    generator = np.random.default_rng(seed)
    members = member_scores.double().cpu().numpy()
    nonmembers = nonmember_scores.double().cpu().numpy()
    if len(members) > len(nonmembers):
        members = generator.choice(members, size=len(nonmembers), replace=False)
    x = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    attack = LogisticRegression(class_weight="balanced").fit(x, y)
    predicted = attack.predict(target_scores.double().cpu().numpy()[:, None])
    return float((predicted == 0).mean())


def split_metrics(
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    target_classes: list[int],
) -> dict[str, float | list[float]]:
    """Every metric of one model from its logits and labels on the named splits.

    ``outputs`` maps ``forget``, ``retain``, ``test`` (the reported half of the test set) and
    ``calibration`` (the held-out half the attack is trained on) to ``(logits, labels)``.
    """
    forget_logits, forget_labels = outputs["forget"]
    retain_logits, retain_labels = outputs["retain"]
    test_logits, test_labels = outputs["test"]
    calib_logits, calib_labels = outputs["calibration"]
    in_target = torch.isin(test_labels, torch.tensor(target_classes, device=test_labels.device))
    result: dict[str, float | list[float]] = {
        "forget_acc": accuracy(forget_logits, forget_labels),
        "retain_acc": accuracy(retain_logits, retain_labels),
        "test_acc": accuracy(test_logits, test_labels),
        "target_class_test_acc": accuracy(test_logits[in_target], test_labels[in_target]),
        "class_test_acc": per_class_accuracy(test_logits, test_labels, num_classes),
    }
    result["mia_confidence"] = mia_efficacy(
        true_class_confidence(retain_logits, retain_labels),
        true_class_confidence(calib_logits, calib_labels),
        true_class_confidence(forget_logits, forget_labels),
    )
    result["mia_entropy"] = mia_efficacy(
        prediction_entropy(retain_logits),
        prediction_entropy(calib_logits),
        prediction_entropy(forget_logits),
    )
    return result


def gaps_to_retrain(metrics: dict, retrain: dict) -> dict[str, float]:
    """Absolute gap of each metric to the retrained model's, and their mean ("avg_gap")."""
    gaps = {name: abs(float(metrics[name]) - float(retrain[name])) for name in GAP_METRICS}
    gaps["avg_gap"] = float(np.mean([gaps[name] for name in GAP_METRICS]))
    return gaps
