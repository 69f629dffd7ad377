"""PS's TensorBoard figures (prototype shifts, soft labels), logged by a callback the module
returns from `configure_callbacks`.

Figures are built on `matplotlib.figure.Figure`, which needs no backend (TensorBoard renders
them through Agg)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure


def prototype_shift_figure(shift: torch.Tensor, target_classes: list[int]) -> Figure:
    """Bar chart of ‖W_new − W_orig‖ per class; the forgotten classes in red."""
    figure = Figure(figsize=(6, 3))
    axes = figure.subplots()
    colours = ["tab:red" if c in target_classes else "tab:blue" for c in range(len(shift))]
    axes.bar(range(len(shift)), shift.cpu().numpy(), color=colours)
    axes.set(xlabel="class", ylabel="‖W_new − W_orig‖", title="prototype shift per class")
    figure.tight_layout()
    return figure


def soft_label_figure(targets: torch.Tensor, labels: torch.Tensor, max_rows: int = 32) -> Figure:
    """The soft-label targets of (up to ``max_rows``) forget samples, true class marked."""
    shown = targets[:max_rows].float().cpu()
    figure = Figure(figsize=(6, 0.25 * len(shown) + 1.2))
    axes = figure.subplots()
    axes.imshow(shown.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=1)
    axes.scatter(labels[:max_rows].cpu().numpy(), range(len(shown)), marker="x", color="red", s=12)
    axes.set(xlabel="class (x: true class)", ylabel="forget sample", title="PS soft labels")
    figure.tight_layout()
    return figure


class PSFigures(L.Callback):
    """At the end of fit (before the module saves its result), the shift of every prototype from
    the original model's and, when PS trained, the soft-label targets, into TensorBoard."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        logger = pl_module.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        writer = logger.experiment
        head = pl_module.model.prototypes
        forget = pl_module.cache["forget"]
        shift = (head.weight.detach() - pl_module.original_weight).norm(dim=1)
        target_classes = sorted(set(forget["labels"].tolist()))
        writer.add_figure("ps/prototype_shift", prototype_shift_figure(shift, target_classes))
        if "targets" in forget:
            writer.add_figure(
                "ps/soft_labels", soft_label_figure(forget["targets"], forget["labels"])
            )
            writer.add_histogram(
                "ps/soft_label_runner_up_mass", forget["targets"].max(dim=1).values
            )
