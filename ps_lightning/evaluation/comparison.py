"""What the comparison chart plots, as data (``comparison.json`` beside ``comparison.png``).

Each model's table numbers, its avg gap to the retrained model with and without the MIA term,
and whether that MIA term says anything: it does only where the membership attack tells
members from non-members better than chance, on the model and on the retrained model (whose
efficacy the term subtracts). An attack at chance makes the term noise (one forget sample of
15 moves it by 0.017), so the chart then reads the avg gap without MIA and says why.
"""

from __future__ import annotations

import math
from typing import Any

from ps_lightning.evaluation.report import COLUMNS, finite
from ps_lightning.metrics import ACCURACY_GAP_METRICS, GAP_METRICS

# The table's columns the chart draws, by key: the shares in [0, 1] (relearn steps, a count,
# are not).
COMPARED = {key: header for header, key, digits in COLUMNS if digits > 0}
# The avg gap's MIA term (the one gap metric that is not an accuracy) and its attack's accuracy.
MIA_GAP_METRIC = next(name for name in GAP_METRICS if name not in ACCURACY_GAP_METRICS)
MIA_ATTACK_ACC = f"{MIA_GAP_METRIC}_attack_acc"
# The least edge over chance (0.5) at which an attack is taken to read membership, however many
# samples score it: the README's "clearly above 0.5". Attacks of 0.51-0.52 on thousands of
# samples are real but read almost nothing (calling every correctly classified sample a member
# scores as much on Fashion-MNIST), so their efficacy differences between models are noise.
MIA_MIN_EDGE = 0.05
# How many standard errors above 0.5 an attack's accuracy must be before it is not chance.
MIA_STANDARD_ERRORS = 2.0
GAP_KEYS = ("avg_gap_without_mia", "avg_gap")
# The table shows gaps to 3 decimals: models equal at that precision are equally close.
GAP_DECIMALS = 3


def attack_scored_samples(members: int, nonmembers: int) -> dict[str, int]:
    """How many members and non-members an attack's accuracy is scored on, as
    `ps_lightning.metrics.attack_accuracy` draws them from ``members`` retain and
    ``nonmembers`` calibration samples: the held-out halves (``np.array_split``'s second) of
    ``min(members, nonmembers)`` members and of all non-members."""
    return {"members": min(members, nonmembers) // 2, "nonmembers": nonmembers // 2}


def chance_level(scored: dict[str, int] | None) -> float:
    """The attack accuracy at or below which an attack is at chance: 0.5 plus the larger of
    ``MIA_MIN_EDGE`` and ``MIA_STANDARD_ERRORS`` standard errors of an accuracy scored on
    ``scored`` samples (the mean of two binomial shares, p(1 - p) <= 1/4 each). Without the
    counts (a summary written before they were recorded), the minimum edge alone."""
    if not scored or min(scored["members"], scored["nonmembers"]) < 1:
        return 0.5 + MIA_MIN_EDGE
    standard_error = math.sqrt(1 / scored["members"] + 1 / scored["nonmembers"]) / 4
    return 0.5 + max(MIA_MIN_EDGE, MIA_STANDARD_ERRORS * standard_error)


def mia_informative(summary: dict[str, Any], level: float) -> dict[str, bool]:
    """Per model with a gap to retrain: whether its avg gap's MIA term is informative, i.e. the
    attack's accuracy is above ``level`` on the model and on the retrained model."""
    models = summary["models"]
    retrain = summary.get("retrain")
    if retrain is None:
        return {}

    def reads(name: str) -> bool:
        accuracy = finite(models[name]["metrics"].get(MIA_ATTACK_ACC))
        return accuracy is not None and accuracy > level

    return {
        name: reads(name) and reads(retrain)
        for name, result in models.items()
        if name != retrain and "gap_to_retrain" in result
    }


def closest_to_retrain(gaps: dict[str, float]) -> list[str]:
    """The models whose gap is the smallest at the table's precision (ties all count)."""
    if not gaps:
        return []
    rounded = {name: round(gap, GAP_DECIMALS) for name, gap in gaps.items()}
    best = min(rounded.values())
    return [name for name, gap in rounded.items() if gap == best]


def comparison_data(summary: dict[str, Any]) -> dict[str, Any]:
    """Everything the comparison chart draws, from an evaluation summary (``metrics.json``).

    ``read`` names the gap to compare models by: ``avg_gap`` only when every compared model's
    MIA term is informative, otherwise ``avg_gap_without_mia``; ``ranking`` orders the models
    by it and ``closest`` names the best (several when equal at 3 decimals).
    """
    models = summary["models"]
    retrain = summary.get("retrain")
    level = chance_level(summary.get("attack_scored_samples"))
    informative = mia_informative(summary, level)
    gaps = {
        key: {name: float(models[name]["gap_to_retrain"][key]) for name in informative}
        for key in GAP_KEYS
    }
    read = "avg_gap" if informative and all(informative.values()) else "avg_gap_without_mia"
    return {
        "retrain": retrain,
        "metric_labels": dict(COMPARED),
        "metrics": {
            name: {key: finite(result["metrics"].get(key)) for key in COMPARED}
            for name, result in models.items()
        },
        **gaps,
        "mia_attack": MIA_ATTACK_ACC,
        "mia_attack_acc": {
            name: finite(result["metrics"].get(MIA_ATTACK_ACC)) for name, result in models.items()
        },
        "mia_chance_level": level,
        "mia_informative": informative,
        "read": read,
        "ranking": sorted(gaps[read], key=lambda name: round(gaps[read][name], GAP_DECIMALS)),
        "closest": closest_to_retrain(gaps[read]),
    }
