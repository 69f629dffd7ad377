"""What users of unlearning measure (docs/design.md §4), as plain functions over logits and
labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

# The metrics averaged into "Avg. Gap" to the retrained model (as in the SalUn line of work:
# forget, retain and test accuracy and MIA-efficacy). The MIA term is the likelihood-ratio
# attack's, the one whose held-out accuracy is the higher on every model we measured
# (docs/evaluation.md); ``avg_gap_without_mia`` is reported beside it for models no attack can read.
ACCURACY_GAP_METRICS = ("forget_acc", "retain_acc", "test_acc")
GAP_METRICS = (*ACCURACY_GAP_METRICS, "mia_lira")
# The splits whose accuracy is also reported per class, as ``class_<split>_acc``.
PER_CLASS_SPLITS = ("test", "forget", "retain")
MemberPick = Literal["random", "first"]
# A fitted attack: (scores, labels) -> is_member, one boolean per sample.
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
# An attack: fitted on (scores, labels, is_member), it returns its predictor.
Attack = Callable[[np.ndarray, np.ndarray, np.ndarray], Predictor]


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


def scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p / (1 − p) of the true class, computed as z_y − logsumexp_{j≠y} z_j so that it stays
    finite where p rounds to 1 (exactly the memorised samples an attack must see)."""
    logits = logits.double()
    true_logit = logits.gather(1, labels[:, None]).flatten()
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true_logit - torch.logsumexp(others, dim=1)


def svc_attack(scores: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> Predictor:
    """The attack of OPTML-Group/Unlearn-Saliency ``Classification/evaluation/SVC_MIA.py``
    (``SVC_fit_predict`` on the "confidence" score): an RBF SVC, C = 3, gamma "auto", on one
    score per sample, without class weighting. It ignores the labels."""
    # Imported here: scikit-learn costs every `ps-lightning` command ~0.3 s to import, and
    # only an evaluation uses it.
    from sklearn.svm import SVC

    classifier = SVC(C=3, gamma="auto", kernel="rbf").fit(scores[:, None], is_member)

    def predict(target_scores: np.ndarray, target_labels: np.ndarray) -> np.ndarray:
        return classifier.predict(target_scores[:, None]).astype(bool)

    return predict


def _gaussian(values: np.ndarray) -> tuple[float, float]:
    # A floor on the spread: a class whose samples all sit at one score would otherwise give a
    # zero variance and an infinite density.
    return float(values.mean()), max(float(values.var()), 1e-4)


def _log_density(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * math.pi * var))


def likelihood_ratio_attack(
    scores: np.ndarray, labels: np.ndarray, is_member: np.ndarray, min_class_samples: int = 10
) -> Predictor:
    """An offline, class-conditional Gaussian likelihood-ratio test, after LiRA (Carlini et
    al., "Membership Inference Attacks From First Principles", S&P 2022) and U-LiRA (Hayes et
    al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy").

    Per class, one Gaussian is fitted to the members' scores and one to the non-members'; a
    sample is called a member where the member Gaussian is the likelier. Why: on the
    logit-scaled confidence (``scaled_confidence``) both populations are close to Gaussian
    (LiRA's observation), so the ratio of the two densities is close to the most powerful test
    on that score (Neyman-Pearson), whereas the raw confidence squeezes every well-classified
    sample against p = 1, where members and non-members look alike. Per class, because how
    confidently a class is recognised differs between classes far more than between members
    and non-members of one class. Offline: no shadow models; both populations come from the
    model under attack. A class with fewer than ``min_class_samples`` members or non-members
    (a wholly forgotten class has no retain member) uses Gaussians fitted on all classes.
    """
    pooled = (*_gaussian(scores[is_member]), *_gaussian(scores[~is_member]))
    fits: dict[int, tuple[float, float, float, float]] = {}
    for label in np.unique(labels):
        members = scores[is_member & (labels == label)]
        nonmembers = scores[~is_member & (labels == label)]
        if min(len(members), len(nonmembers)) >= min_class_samples:
            fits[int(label)] = (*_gaussian(members), *_gaussian(nonmembers))

    def predict(target_scores: np.ndarray, target_labels: np.ndarray) -> np.ndarray:
        member_mean, member_var, nonmember_mean, nonmember_var = (
            np.array([fits.get(int(label), pooled) for label in target_labels], dtype=np.float64)
            .reshape(-1, 4)
            .T
        )
        return _log_density(target_scores, member_mean, member_var) > _log_density(
            target_scores, nonmember_mean, nonmember_var
        )

    return predict


# Every attack by the name of its efficacy metric: the score it reads and how it is fitted.
# metrics[name] is the share of forget samples it calls non-members, metrics[name +
# "_attack_acc"] its own held-out accuracy at telling members from non-members.
MIA_ATTACKS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Attack]] = {
    "mia_svc": (true_class_confidence, svc_attack),
    "mia_lira": (scaled_confidence, likelihood_ratio_attack),
}


def _member_rows(
    member_count: int, nonmember_count: int, pick: MemberPick, seed: int
) -> np.ndarray:
    """As many members as non-members (all when fewer), so that a constant guess cannot score
    well. ``first``: the first ones, as the reference does (``Subset(retain, range(test_len))``,
    on a training set in random order); ``random`` (default): a seeded random subset, as our
    retain order may be sorted by class."""
    count = min(member_count, nonmember_count)
    if pick == "first":
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(member_count)[:count])


def _numpy(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = pair
    return scores.double().cpu().numpy(), labels.cpu().numpy()


def _fit(
    attack: Attack,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
) -> Predictor:
    scores = np.concatenate([members[0], nonmembers[0]])
    labels = np.concatenate([members[1], nonmembers[1]])
    is_member = np.concatenate([np.ones(len(members[0]), bool), np.zeros(len(nonmembers[0]), bool)])
    return attack(scores, labels, is_member)


def mia_efficacy(
    attack: Attack,
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    pick: MemberPick = "random",
    seed: int = 0,
) -> float:
    """Share of the target (forget) samples that ``attack`` calls non-members, fitted on
    members (retain samples) against non-members (held-out samples); each argument is
    ``(scores, labels)``."""
    member_scores, member_labels = _numpy(members)
    rows = _member_rows(len(member_scores), len(nonmembers[0]), pick, seed)
    predict = _fit(attack, (member_scores[rows], member_labels[rows]), _numpy(nonmembers))
    return float(np.mean(~predict(*_numpy(targets))))


def attack_accuracy(
    attack: Attack,
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    pick: MemberPick = "random",
    seed: int = 0,
) -> float:
    """How well ``attack`` tells members from non-members on samples it was not fitted on:
    fitted on one half of the members and one half of the non-members (drawn as for
    ``mia_efficacy``), scored on the other halves; the mean of its accuracy on members and on
    non-members, so chance is 0.5 whatever the counts."""
    member_scores, member_labels = _numpy(members)
    nonmember_scores, nonmember_labels = _numpy(nonmembers)
    rows = _member_rows(len(member_scores), len(nonmember_scores), pick, seed)
    generator = np.random.default_rng(seed)
    members_order = rows[generator.permutation(len(rows))]
    nonmembers_order = generator.permutation(len(nonmember_scores))
    fit_members, held_members = np.array_split(members_order, 2)
    fit_nonmembers, held_nonmembers = np.array_split(nonmembers_order, 2)
    predict = _fit(
        attack,
        (member_scores[fit_members], member_labels[fit_members]),
        (nonmember_scores[fit_nonmembers], nonmember_labels[fit_nonmembers]),
    )
    on_members = predict(member_scores[held_members], member_labels[held_members])
    on_nonmembers = predict(nonmember_scores[held_nonmembers], nonmember_labels[held_nonmembers])
    return float((on_members.mean() + (~on_nonmembers).mean()) / 2)


def split_metrics(
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    target_classes: list[int],
    member_pick: MemberPick = "random",
) -> dict[str, float | list[float | None]]:
    """Every metric of one model from its logits and labels on the named splits.

    ``outputs`` maps ``forget``, ``retain``, ``test`` (the reported half of the test set) and
    ``calibration`` (the held-out half the attacks are fitted on) to ``(logits, labels)``.
    """
    forget_logits, forget_labels = outputs["forget"]
    retain_logits, retain_labels = outputs["retain"]
    test_logits, test_labels = outputs["test"]
    in_target = torch.isin(test_labels, torch.tensor(target_classes, device=test_labels.device))
    result: dict[str, float | list[float | None]] = {
        "forget_acc": accuracy(forget_logits, forget_labels),
        "retain_acc": accuracy(retain_logits, retain_labels),
        "test_acc": accuracy(test_logits, test_labels),
        "target_class_test_acc": accuracy(test_logits[in_target], test_labels[in_target]),
    }
    # Per class on every reported split: the test split shows what the model still knows,
    # forget and retain where it changed. None (JSON's null; NaN is not JSON) where a split holds
    # no sample of the class, as the forget split does of most classes.
    for split in PER_CLASS_SPLITS:
        per_class = per_class_accuracy(*outputs[split], num_classes)
        result[f"class_{split}_acc"] = [None if math.isnan(v) else v for v in per_class]
    for name, (score, attack) in MIA_ATTACKS.items():
        members, nonmembers, forget = (
            (score(*outputs[split]), outputs[split][1])
            for split in ("retain", "calibration", "forget")
        )
        result[name] = mia_efficacy(attack, members, nonmembers, forget, member_pick)
        result[f"{name}_attack_acc"] = attack_accuracy(attack, members, nonmembers, member_pick)
    return result


def gaps_to_retrain(metrics: dict, retrain: dict) -> dict[str, float]:
    """Absolute gap of each metric to the retrained model's, their mean ("avg_gap") and the mean
    of the accuracy gaps alone ("avg_gap_without_mia")."""
    gaps = {name: abs(float(metrics[name]) - float(retrain[name])) for name in GAP_METRICS}
    gaps["avg_gap"] = float(np.mean([gaps[name] for name in GAP_METRICS]))
    gaps["avg_gap_without_mia"] = float(np.mean([gaps[name] for name in ACCURACY_GAP_METRICS]))
    return gaps
