"""PS's TensorBoard figures (prototype and bias shifts, soft labels) and what its early stop
did (text ``ps/early_stop``), logged by a callback the module returns from
`configure_callbacks`.

Figures are built on `matplotlib.figure.Figure`, which needs no backend (TensorBoard renders
them through Agg)."""

from __future__ import annotations

import textwrap
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from ps_lightning.prototype_surgery.early_stop import early_stop_outcome


def prototype_shift_figure(
    weight_shift: torch.Tensor,
    bias_shift: torch.Tensor,
    target_classes: list[int],
    note: str | None = None,
) -> Figure:
    """Bar charts of ‖W_new − W_orig‖ and |b_new − b_orig| per class, the forgotten classes in
    red. ``note`` (why the head is what it is, e.g. the early stop restored the start) heads
    the figure; a chart with nothing to show says "unchanged" instead of staying blank."""
    figure = Figure(figsize=(6, 5.2))
    colours = ["tab:red" if c in target_classes else "tab:blue" for c in range(len(weight_shift))]
    panels = (
        (weight_shift, "‖W_new − W_orig‖", "prototype shift per class"),
        (bias_shift, "|b_new − b_orig|", "bias shift per class"),
    )
    for axes, (shift, label, title) in zip(figure.subplots(2, 1, sharex=True), panels, strict=True):
        values = shift.detach().cpu().numpy()
        axes.bar(range(len(values)), values, color=colours)
        axes.set(ylabel=label, title=title)
        if not values.any():
            axes.set_ylim(0, 1)
            axes.text(0.5, 0.5, "unchanged", transform=axes.transAxes, ha="center", va="center")
    axes.set(xlabel="class (red: forgotten)")
    if note:
        figure.suptitle(textwrap.fill(note, 90), fontsize=8)
    figure.tight_layout()
    return figure


def early_stop_note(record: dict[str, Any]) -> str | None:
    """What PS's early stop did to the saved head, from the run's unlearning record, and where
    TensorBoard shows it."""
    if not record.get("early_stop_used"):
        return None
    outcome = early_stop_outcome(record)
    return (
        f"PS's early stop {outcome}. The ps/ curves show the epochs tried, ps/saved/ the saved "
        "head."
    )


def soft_label_figure(targets: torch.Tensor, labels: torch.Tensor, max_rows: int = 32) -> Figure:
    """The soft-label targets of (up to ``max_rows``) forget samples, true class marked, with a
    colour bar: without it a reader cannot tell a runner-up's 0.4 from 0.9."""
    shown = targets[:max_rows].float().cpu()
    figure = Figure(figsize=(7, 0.25 * len(shown) + 1.6))
    axes = figure.subplots()
    image = axes.imshow(shown.numpy(), cmap="viridis", aspect="auto", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="target probability")
    axes.scatter(labels[:max_rows].cpu().numpy(), range(len(shown)), marker="x", color="red", s=12)
    axes.set(xlabel="class (x: true class)", ylabel="forget sample", title="PS soft labels")
    figure.tight_layout()
    return figure


class PSFigures(L.Callback):
    """At the end of fit (before the module saves its result), the shift of every prototype and
    bias from the original model's, what the early stop did and, when PS trained, the soft-label
    targets, into TensorBoard."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        logger = pl_module.logger
        if not isinstance(logger, TensorBoardLogger) or not trainer.is_global_zero:
            return
        if pl_module.block is not None:
            return  # method block redraws the head: a shift from the original says nothing
        writer = logger.experiment
        head = pl_module.model.prototypes
        forget = pl_module.cache["forget"]
        note = early_stop_note(pl_module.unlearning_record())
        if note:
            writer.add_text("ps/early_stop", note)
        writer.add_figure(
            "ps/prototype_shift",
            prototype_shift_figure(
                (head.weight.detach() - pl_module.original_weight).norm(dim=1),
                (head.bias.detach() - pl_module.original_bias).abs(),
                sorted(set(forget["labels"].tolist())),
                note,
            ),
        )
        if "targets" in forget:
            writer.add_figure(
                "ps/soft_labels", soft_label_figure(forget["targets"], forget["labels"])
            )
            writer.add_histogram(
                "ps/soft_label_runner_up_mass", forget["targets"].max(dim=1).values
            )
