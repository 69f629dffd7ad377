"""The confusion matrix and its figure for TensorBoard.

Figures are built on `matplotlib.figure.Figure`, which needs no backend (TensorBoard renders
them through Agg), so importing this module selects none."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    index = labels.cpu() * num_classes + logits.argmax(dim=1).cpu()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_matrix_figure(matrix: torch.Tensor, title: str) -> Figure:
    rows = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    figure = Figure(figsize=(5, 4.5))
    axes = figure.subplots()
    image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    figure.colorbar(image, ax=axes, label="share of the true class")
    figure.tight_layout()
    return figure
