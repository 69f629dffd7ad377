"""The evaluation's figures for TensorBoard: confusion matrices with their counts, per-class
accuracy before and after unlearning, and the comparison table as a chart.

Figures are built on `matplotlib.figure.Figure`, which needs no backend (TensorBoard renders
them through Agg), so importing this module selects none."""

from __future__ import annotations

import math

import numpy as np
import torch
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


def comparison_figure(
    values: dict[str, dict[str, float]],
    metric_labels: dict[str, str],
    retrain: str | None,
    avg_gaps: dict[str, float],
) -> Figure:
    """The comparison table as a chart: ``values[model][metric]`` as grouped bars per metric,
    the retrained model's level as a black line across each group, and beside them each
    model's average gap to it (lower is closer to retraining)."""
    models = list(values)
    metrics = list(metric_labels)
    figure = Figure(figsize=(4 + 1.1 * len(metrics) + 0.5 * len(models), 4.6))
    with_gaps = retrain is not None and bool(avg_gaps)
    grid = figure.add_gridspec(1, 2, width_ratios=(3, 1)) if with_gaps else None
    axes = figure.add_subplot(grid[0, 0] if grid is not None else 111)
    bar_width = 0.8 / len(models)
    positions = np.arange(len(metrics))
    for offset, model in enumerate(models):
        heights = [values[model].get(metric, math.nan) for metric in metrics]
        bars = axes.bar(
            positions + (offset - (len(models) - 1) / 2) * bar_width,
            heights,
            bar_width,
            label=model,
            hatch="//" if model == retrain else None,
        )
        axes.bar_label(bars, fmt="%.2f", rotation=90, padding=2, fontsize=6)
    if retrain is not None:
        for position, metric in zip(positions, metrics, strict=True):
            axes.hlines(
                values[retrain].get(metric, math.nan),
                position - 0.45,
                position + 0.45,
                colors="black",
                linewidths=1.5,
            )
    axes.set_xticks(positions, [metric_labels[m] for m in metrics], rotation=20, ha="right")
    axes.set(ylim=(0, 1.25), title="every model" + (f" (black line: {retrain})" if retrain else ""))
    axes.legend(fontsize=7, loc="upper left", ncols=len(models))
    if grid is not None:
        gap_axes = figure.add_subplot(grid[0, 1])
        names = [m for m in models if m in avg_gaps]
        bars = gap_axes.barh(names, [avg_gaps[m] for m in names], color="tab:gray")
        gap_axes.bar_label(bars, fmt="%.3f", fontsize=7)
        gap_axes.invert_yaxis()
        gap_axes.set(title=f"avg gap to {retrain} ↓", xlabel="mean absolute gap")
        gap_axes.set_xlim(0, max([*avg_gaps.values(), 0.01]) * 1.3)
    figure.tight_layout()
    return figure
