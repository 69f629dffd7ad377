"""Matplotlib figures for TensorBoard: confusion matrix, prototype shifts, soft labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: figures are only rendered into TensorBoard

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    index = labels.cpu() * num_classes + logits.argmax(dim=1).cpu()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_matrix_figure(matrix: torch.Tensor, title: str) -> Figure:
    rows = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    figure, axes = plt.subplots(figsize=(5, 4.5))
    image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    figure.colorbar(image, ax=axes, label="share of the true class")
    figure.tight_layout()
    return figure


def prototype_shift_figure(shift: torch.Tensor, target_classes: list[int]) -> Figure:
    """Bar chart of ‖W_new − W_orig‖ per class; the forgotten classes in red."""
    figure, axes = plt.subplots(figsize=(6, 3))
    colours = ["tab:red" if c in target_classes else "tab:blue" for c in range(len(shift))]
    axes.bar(range(len(shift)), shift.cpu().numpy(), color=colours)
    axes.set(xlabel="class", ylabel="‖W_new − W_orig‖", title="prototype shift per class")
    figure.tight_layout()
    return figure


def soft_label_figure(targets: torch.Tensor, labels: torch.Tensor, max_rows: int = 32) -> Figure:
    """The soft-label targets of (up to ``max_rows``) forget samples, true class marked."""
    shown = targets[:max_rows].float().cpu()
    figure, axes = plt.subplots(figsize=(6, 0.25 * len(shown) + 1.2))
    axes.imshow(shown.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=1)
    axes.scatter(labels[:max_rows].cpu().numpy(), range(len(shown)), marker="x", color="red", s=12)
    axes.set(xlabel="class (x: true class)", ylabel="forget sample", title="PS soft labels")
    figure.tight_layout()
    return figure
