"""The evaluation's figures for TensorBoard: confusion matrices with their counts, per-class
accuracy before and after unlearning, and the comparison table as a chart (also written as
``comparison.png`` beside ``comparison.json``, the data it draws).

Figures are built on `matplotlib.figure.Figure`, which needs no backend (TensorBoard renders
them through Agg), so importing this module selects none."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Above this many classes a cell is a few pixels wide: counts are left out (the figure says so).
MAX_ANNOTATED_CLASSES = 30


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    index = labels.cpu() * num_classes + logits.argmax(dim=1).cpu()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_matrix_figure(matrix: torch.Tensor, title: str) -> Figure:
    """Cells coloured by the share of their true class (row), each holding its count."""
    num_classes = len(matrix)
    rows = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(4.5 + 0.35 * num_classes, 16.0)
    figure = Figure(figsize=(side + 0.5, side))
    axes = figure.subplots()
    image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    annotated = num_classes <= MAX_ANNOTATED_CLASSES
    if annotated:
        for (true_class, predicted), count in np.ndenumerate(matrix.numpy()):
            share = float(rows[true_class, predicted])
            axes.text(
                predicted,
                true_class,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share > 0.5 else "black",
            )
        axes.set_xticks(range(num_classes))
        axes.set_yticks(range(num_classes))
    note = "" if annotated else f" (counts left out above {MAX_ANNOTATED_CLASSES} classes)"
    axes.set(xlabel="predicted class", ylabel="true class", title=f"{title}{note}")
    figure.colorbar(image, ax=axes, label="share of the true class")
    figure.tight_layout()
    return figure


def per_class_accuracy_figure(
    accuracies: dict[str, dict[str, list[float | None]]], title: str, target_classes: list[int]
) -> Figure:
    """One panel per split, a group of bars per class (a line over the classes above
    ``MAX_ANNOTATED_CLASSES``): ``accuracies[split][label]`` is the per-class accuracy of the
    model called ``label`` (e.g. the original before, the model after, the retrained model as
    the target). A class without samples in a split (None) shows nothing; the forgotten classes
    are shaded."""
    splits = list(accuracies)
    num_classes = len(next(iter(next(iter(accuracies.values())).values())))
    width = min(4 + 0.45 * num_classes, 20.0)
    figure = Figure(figsize=(width, 2.6 * len(splits) + 0.6))
    panels = figure.subplots(len(splits), 1, sharex=True, squeeze=False)[:, 0]
    classes = np.arange(num_classes)
    few_classes = num_classes <= MAX_ANNOTATED_CLASSES
    for axes, split in zip(panels, splits, strict=True):
        series = accuracies[split]
        bar_width = 0.8 / len(series)
        for offset, (label, values) in enumerate(series.items()):
            shown = np.array(values, dtype=float)  # None: NaN, drawn as nothing
            if not few_classes:  # thousands of bars take seconds to draw and are not read
                axes.plot(classes, shown, marker=".", markersize=3, linewidth=0.6, label=label)
                continue
            bars = axes.bar(
                classes + (offset - (len(series) - 1) / 2) * bar_width,
                shown,
                bar_width,
                label=label,
            )
            # A zero is a result, an absent class is not: zeros get a visible mark.
            axes.bar_label(bars, labels=["0" if v == 0 else "" for v in shown], fontsize=6)
        for target in target_classes:
            axes.axvspan(target - 0.45, target + 0.45, color="tab:red", alpha=0.08, lw=0)
        axes.set(ylim=(0, 1.1), ylabel=f"{split} accuracy")
    panels[-1].set(xlabel="class (shaded: forgotten; none shown: no sample of the class)")
    if few_classes:
        panels[-1].set_xticks(classes)
    figure.suptitle(title)
    figure.legend(*panels[0].get_legend_handles_labels(), loc="upper right", fontsize=7)
    figure.tight_layout()
    return figure


# The gap panel's bars by what they show (the legend's words; a test finds the bars by them).
GAP_BAR_LABELS = {
    "avg_gap_without_mia": "avg gap without MIA (forget, retain, test acc)",
    "avg_gap": "avg gap (with the MIA term)",
}
MIA_AT_CHANCE_LABEL = "avg gap, MIA term uninformative (attack at chance)"
GAP_AXES_LABEL = "avg gaps"


def comparison_figure(data: dict[str, Any]) -> Figure:
    """The comparison table as a chart, drawn from `comparison.comparison_data` alone (so its
    JSON is what the chart shows): every model per metric with the retrained model's level as
    a black line, and below, each model's avg gap to it without and with the MIA term, ranked by
    the one to read, the closest model named."""
    models = list(data["metrics"])
    metrics = list(data["metric_labels"])
    ranking = data["ranking"]
    # About 1100 px wide and as tall as the panels need: read at TensorBoard's card width
    # without opening it (a 3.5:1 strip shrinks its text below reading size).
    width = min(max(11.0, 2.0 + 0.1 * len(metrics) * len(models)), 20.0)
    gap_height = 2.0 + 0.55 * len(ranking) if ranking else 0.0
    figure = Figure(figsize=(width, 4.8 + gap_height), layout="constrained")
    if ranking:
        top, bottom = figure.subplots(2, 1, height_ratios=(4.8, gap_height))
        _gap_panel(bottom, data)
    else:
        top = figure.subplots()
    _metric_panel(top, data, models, metrics)
    return figure


def _metric_panel(axes: Axes, data: dict[str, Any], models: list[str], metrics: list[str]) -> None:
    retrain = data["retrain"]
    bar_width = 0.8 / len(models)
    positions = np.arange(len(metrics))
    for offset, model in enumerate(models):
        heights = [_nan(data["metrics"][model][metric]) for metric in metrics]
        bars = axes.bar(
            positions + (offset - (len(models) - 1) / 2) * bar_width,
            heights,
            bar_width,
            label=model,
            hatch="//" if model == retrain else None,
        )
        if len(models) <= 6:  # more labels than that overlap
            axes.bar_label(bars, fmt="%.2f", rotation=90, padding=2, fontsize=7)
    if retrain is not None:
        for position, metric in zip(positions, metrics, strict=True):
            level = _nan(data["metrics"][retrain][metric])
            axes.hlines(level, position - 0.45, position + 0.45, colors="black", linewidths=1.5)
    labels = [data["metric_labels"][m] for m in metrics]
    axes.set_xticks(positions, labels, rotation=20, ha="right", fontsize=9)
    title = "every model per metric" + (f" (black line: {retrain})" if retrain else "")
    axes.set(ylim=(0, 1.3), ylabel="share", title=title)
    axes.legend(fontsize=9, loc="upper left", ncols=min(len(models), 5))


def _gap_panel(axes: Axes, data: dict[str, Any]) -> None:
    """Per model (ranked, closest first) two bars: the gap to read, then the other one; an avg
    gap whose MIA term is uninformative is hatched and named so."""
    axes.set_label(GAP_AXES_LABEL)
    read = data["read"]
    ranking = data["ranking"]
    positions = {model: index for index, model in enumerate(ranking)}
    bar_height = 0.38
    for slot, key in enumerate(sorted(GAP_BAR_LABELS, key=lambda k: k != read)):
        groups = {GAP_BAR_LABELS[key]: ranking}
        if key == "avg_gap":
            groups = {
                GAP_BAR_LABELS[key]: [m for m in ranking if data["mia_informative"][m]],
                MIA_AT_CHANCE_LABEL: [m for m in ranking if not data["mia_informative"][m]],
            }
        for label, members in groups.items():
            if not members:
                continue
            at_chance = label == MIA_AT_CHANCE_LABEL
            bars = axes.barh(
                [positions[m] + (slot - 0.5) * bar_height for m in members],
                [data[key][m] for m in members],
                bar_height,
                label=label,
                color="tab:blue" if key == read else ("whitesmoke" if at_chance else "tab:gray"),
                edgecolor="tab:gray" if at_chance else None,
                hatch="xx" if at_chance else None,
            )
            for bar, model in zip(bars, members, strict=True):
                bar.set_gid(model)  # which model a bar is, for whoever reads the figure
            axes.bar_label(bars, fmt="%.3f", padding=3, fontsize=9)
    closest = set(data["closest"])
    axes.set_yticks(
        range(len(ranking)), [f"{m}  (closest)" if m in closest else m for m in ranking]
    )
    for tick, model in zip(axes.get_yticklabels(), ranking, strict=True):
        tick.set_fontweight("bold" if model in closest else "normal")
    axes.invert_yaxis()
    largest = max([*data["avg_gap"].values(), *data["avg_gap_without_mia"].values(), 0.01])
    axes.set_xlim(0, largest * 1.35)
    axes.set_xlabel("mean absolute gap to the retrained model (lower: closer)")
    axes.set_title(_gap_title(data), fontsize=10)
    # Below the panel: inside, it would cover the longest bars.
    axes.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)


def _gap_title(data: dict[str, Any]) -> str:
    read = "avg gap without MIA" if data["read"] == "avg_gap_without_mia" else "avg gap"
    title = f"avg gap to {data['retrain']} ↓, ranked by the {read}"
    level = data["mia_chance_level"]
    attack = data["metric_labels"].get(data["mia_attack"], data["mia_attack"])
    at_chance = [
        name
        for name, accuracy in data["mia_attack_acc"].items()
        if accuracy is None or accuracy <= level
    ]
    if not all(data["mia_informative"].values()):
        title += (
            f"\nMIA term uninformative: {attack} ≤ {level:.3f} (chance) on {', '.join(at_chance)}"
        )
    return title


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
