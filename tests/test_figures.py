"""The figures users read: the comparison chart (its data, which gap it ranks by, the MIA term
marked when the attack is at chance, its size), per-class accuracy as bars, colour bars on
heatmaps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ps_lightning.evaluation.comparison import (
    attack_scored_samples,
    chance_level,
    comparison_data,
)
from ps_lightning.evaluation.figures import (
    GAP_AXES_LABEL,
    GAP_BAR_LABELS,
    MIA_AT_CHANCE_LABEL,
    comparison_figure,
    per_class_accuracy_figure,
)
from ps_lightning.metrics import attack_accuracy, gaps_to_retrain
from ps_lightning.prototype_surgery.figures import soft_label_figure


def _metrics(test_acc: float, retain_acc: float, mia_lira: float, attack_acc: float) -> dict:
    return {
        "forget_acc": 1.0,
        "retain_acc": retain_acc,
        "test_acc": test_acc,
        "target_class_test_acc": test_acc,
        "mia_svc": 0.4,
        "mia_svc_attack_acc": 0.51,
        "mia_lira": mia_lira,
        "mia_lira_attack_acc": attack_acc,
        "linear_probe_forget_acc": 1.0,
        "relearn_steps": 0,
    }


def _summary(attack_acc: float, scored: int = 90) -> dict[str, Any]:
    """The README demo's numbers: Naive PS has the smallest avg gap only through the MIA term
    (one forget sample of LiRA), PS and the original are closest without it."""
    metrics = {
        "original": _metrics(0.989, 1.0, 0.467, attack_acc),
        "retrain": _metrics(0.989, 1.0, 0.400, attack_acc),
        "naive_ps": _metrics(0.972, 0.998, 0.400, attack_acc),
        "ps": _metrics(0.989, 1.0, 0.467, attack_acc),
    }
    return {
        "retrain": "retrain",
        "attack_scored_samples": {"members": scored, "nonmembers": scored},
        "models": {
            name: {"metrics": m, "gap_to_retrain": gaps_to_retrain(m, metrics["retrain"])}
            for name, m in metrics.items()
        },
    }


def _gap_bars(figure: Figure) -> dict[str, dict[str, float]]:
    """What the chart's gap panel draws: bar label → model → bar length."""
    return {
        container.get_label(): {bar.get_gid(): bar.get_width() for bar in container}
        for container in _gap_axes(figure).containers
    }


def _gap_axes(figure: Figure) -> Axes:
    (axes,) = [a for a in figure.axes if a.get_label() == GAP_AXES_LABEL]
    return axes


# --------------------------------------------------------------------------- comparison chart


def test_comparison_chart_shows_the_avg_gap_without_mia_and_ranks_by_it_at_chance() -> None:
    summary = _summary(attack_acc=0.53)
    gaps = {name: r["gap_to_retrain"] for name, r in summary["models"].items()}

    data = comparison_data(summary)
    bars = _gap_bars(comparison_figure(data))

    # The avg gap alone would crown Naive PS (0.005 against 0.017).
    assert gaps["naive_ps"]["avg_gap"] < gaps["ps"]["avg_gap"]
    without_mia = bars[GAP_BAR_LABELS["avg_gap_without_mia"]]
    assert without_mia == pytest.approx(
        {name: gaps[name]["avg_gap_without_mia"] for name in ("original", "naive_ps", "ps")}
    )
    assert data["avg_gap_without_mia"] == pytest.approx(without_mia)
    assert data["read"] == "avg_gap_without_mia"
    assert data["ranking"] == ["original", "ps", "naive_ps"]
    assert data["closest"] == ["original", "ps"]
    labels = [tick.get_text() for tick in _gap_axes(comparison_figure(data)).get_yticklabels()]
    assert labels == ["original  (closest)", "ps  (closest)", "naive_ps"]


def test_comparison_chart_marks_the_mia_term_uninformative_when_the_attack_is_at_chance() -> None:
    data = comparison_data(_summary(attack_acc=0.53))  # 90 + 90 samples: chance up to 0.575
    figure = comparison_figure(data)

    bars = _gap_bars(figure)
    assert data["mia_informative"] == {"original": False, "naive_ps": False, "ps": False}
    assert GAP_BAR_LABELS["avg_gap"] not in bars
    assert bars[MIA_AT_CHANCE_LABEL] == pytest.approx(data["avg_gap"])
    assert "MIA term uninformative" in _gap_axes(figure).get_title()


def test_comparison_chart_ranks_by_the_avg_gap_when_the_attack_reads_membership() -> None:
    data = comparison_data(_summary(attack_acc=0.7))
    figure = comparison_figure(data)

    bars = _gap_bars(figure)
    assert data["read"] == "avg_gap" and all(data["mia_informative"].values())
    assert data["ranking"][0] == "naive_ps" and data["closest"] == ["naive_ps"]
    assert MIA_AT_CHANCE_LABEL not in bars
    assert bars[GAP_BAR_LABELS["avg_gap"]] == pytest.approx(data["avg_gap"])
    assert bars[GAP_BAR_LABELS["avg_gap_without_mia"]] == pytest.approx(data["avg_gap_without_mia"])
    assert "uninformative" not in _gap_axes(figure).get_title()


def test_an_attack_at_chance_on_the_retrained_model_voids_every_mia_term() -> None:
    summary = _summary(attack_acc=0.7)
    summary["models"]["retrain"]["metrics"]["mia_lira_attack_acc"] = 0.52

    data = comparison_data(summary)

    assert not any(data["mia_informative"].values()) and data["read"] == "avg_gap_without_mia"


def test_chance_reaches_further_above_half_on_fewer_scored_samples() -> None:
    # Two standard errors of the mean of two shares over 90 samples each: 0.0745.
    assert chance_level({"members": 90, "nonmembers": 90}) == pytest.approx(0.5745, abs=1e-4)
    # Thousands of samples: the least edge that reads anything, 0.05.
    assert chance_level({"members": 5000, "nonmembers": 5000}) == pytest.approx(0.55)
    assert chance_level(None) == pytest.approx(0.55)  # a summary without the counts


def test_the_scored_samples_are_those_attack_accuracy_scores() -> None:
    scored: list[int] = []

    def attack(scores: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> Any:
        def predict(target_scores: np.ndarray, target_labels: np.ndarray) -> np.ndarray:
            scored.append(len(target_scores))
            return np.zeros(len(target_scores), bool)

        return predict

    for members, nonmembers in ((301, 181), (50, 181), (181, 181)):
        scored.clear()
        attack_accuracy(
            attack,
            (torch.rand(members), torch.zeros(members, dtype=torch.long)),
            (torch.rand(nonmembers), torch.zeros(nonmembers, dtype=torch.long)),
        )
        assert attack_scored_samples(members, nonmembers) == {
            "members": scored[0],
            "nonmembers": scored[1],
        }


def test_the_comparison_chart_is_readable_at_a_card_width_not_a_strip() -> None:
    figure = comparison_figure(comparison_data(_summary(attack_acc=0.53)))

    width, height = figure.get_size_inches() * figure.dpi
    # Before: 1590 x 460 px with 6-7 pt labels, a thumbnail once fitted to a card.
    assert 1000 <= width <= 1400 and height >= 0.6 * width
    smallest = min(
        text.get_fontsize()
        for axes in figure.axes
        for text in [*axes.get_xticklabels(), *axes.get_yticklabels(), axes.title]
    )
    assert smallest >= 9


# --------------------------------------------------------------------------- per class, heatmaps


def test_per_class_accuracy_is_a_bar_per_class_at_its_value() -> None:
    series = {
        "test": {"a (before)": [1.0, 0.9, 0.5], "a (after)": [0.8, 0.0, None]},
        "forget": {"a (before)": [None, 1.0, None], "a (after)": [None, 0.0, None]},
    }

    figure = per_class_accuracy_figure(series, "a", target_classes=[1])

    for axes, split in zip(figure.axes, series, strict=True):
        drawn = {
            container.get_label(): [bar.get_height() for bar in container]
            for container in axes.containers
        }
        expected = {
            label: [np.nan if v is None else v for v in values]
            for label, values in series[split].items()
        }
        assert list(drawn) == list(expected), split
        for label, values in expected.items():
            assert drawn[label] == pytest.approx(values, nan_ok=True), (split, label)
        centres = [bar.get_x() + bar.get_width() / 2 for bar in axes.containers[0]]
        assert np.argsort(centres).tolist() == [0, 1, 2]  # class order, left to right


def test_the_soft_label_heatmap_has_a_colour_bar_from_zero_to_one() -> None:
    targets = torch.softmax(torch.randn(4, 10, generator=torch.Generator().manual_seed(0)), 1)

    figure = soft_label_figure(targets, torch.tensor([1, 1, 2, 3]))

    _heatmap, colour_bar = figure.axes
    assert colour_bar.get_ylabel() == "target probability"
    assert colour_bar.get_ylim() == pytest.approx((0.0, 1.0))
