"""PS's early stop: stop when the forget samples are no longer recognised more confidently than
held-out samples of their classes (a retrained model's behaviour), and keep the head state,
checked before each step, that came closest to that level."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ps_lightning.metrics import true_class_confidence

# How many times its ``epochs`` PS may run on a whole-class request before giving up on reaching
# the target (no forget sample classified as its class): the steps a class needs depend on its
# size and margins, which no per-dataset epoch count foresees.
WHOLE_CLASS_EPOCH_LIMIT = 10


def early_stop_outcome(record: dict[str, Any]) -> str | None:
    """What the early stop did, or why it was off, from a PS run's unlearning record, in the one
    wording that the log, the run summary, the TensorBoard note and the table note share (the
    record carries it as ``early_stop_outcome``); ``None`` for a run that trains no PS epoch or
    has no early stop."""
    config = record.get("config") or {}
    if record.get("method_run") == "block":
        target, reached = record.get("block_target_retain_acc"), record.get("block_retain_acc")
        stopped = record.get("stopped_at_epoch")
        when = f"stopped at epoch {stopped}" if stopped is not None else "ran every epoch"
        if target is None or reached is None:
            return None  # saved before its first epoch ended
        return (
            f"method block (the last block retrained on the retain set) {when}: retain accuracy "
            f"{reached:.4f}, the original's {target:.4f}"
        )
    if record.get("whole_class_stop"):
        stopped = record.get("stopped_at_epoch")
        if stopped is None:
            return (
                f"ran all {record.get('epoch_limit')} epochs of a whole-class request without "
                "reaching forget accuracy 0"
            )
        return (
            f"stopped at epoch {stopped} of a whole-class request, when no forget sample was "
            "classified as its class any more"
        )
    method = record.get("method_run") or config.get("method", "ps")  # auto: as it ran
    if not record.get("early_stop_used"):
        mode = config.get("early_stop")
        trains = method != "naive" and config.get("epochs", 0) > 0
        if mode is None or not trains:
            return None  # Naive PS, or a run without PS epochs
        return f"off (early_stop: {mode})"
    if record.get("ps_kept_start_state"):
        start = "the original model" if method == "ps" else "Naive PS's result"
        return (
            "kept the starting head (ps_kept_start_state): no PS step came closer to the "
            f"held-out confidence level, so the result equals {start}"
        )
    stopped = record.get("stopped_at_epoch")
    when = (
        f"stopped training at epoch {stopped}"
        if stopped is not None
        else "let every epoch run without reaching the held-out level"
    )
    restored = record.get("restored_step")
    # No step restored: training ran out and the last head was the closest to the level.
    kept = "the last epoch's head" if restored is None else f"the head of step {restored}"
    return f"{when}; kept {kept}"


def heldout_confidence(
    calibration_logits: torch.Tensor,
    calibration_labels: torch.Tensor,
    forget_labels: torch.Tensor,
    num_classes: int,
) -> float:
    """The mean true-class confidence of ``calibration_logits`` (the original model's, on
    held-out samples) per class, weighted by the forget set's class mix."""
    calibration_conf = true_class_confidence(calibration_logits, calibration_labels)
    per_class = calibration_conf.new_zeros(num_classes)
    per_class.index_add_(0, calibration_labels, calibration_conf)
    counts = torch.bincount(calibration_labels, minlength=num_classes).clamp(min=1)
    return float((per_class / counts)[forget_labels].mean())


class ClosestToHeldoutLevel:
    """The early-stop controller of the PS epochs, over the final layer it is given.

    The level is fixed from the original model, as a model retrained without a part of a class
    still recognises that class's unseen samples; comparing with the current head instead would
    be fooled when PS erases the whole class (both levels fall to zero).

    Args:
        heldout_level: the original model's held-out confidence (`heldout_confidence`).
    """

    def __init__(self, heldout_level: float) -> None:
        self.heldout_level = heldout_level
        self.closest: tuple[float, int, torch.Tensor, torch.Tensor] | None = None
        self.restored_step: int | None = None

    def excess(self, forget_confidence: float) -> float:
        """How much more confidently the forget samples are recognised than the held-out level:
        > 0 while they are still remembered."""
        return forget_confidence - self.heldout_level

    def reached(self, forget_confidence: float, step: int, head: nn.Linear) -> bool:
        """Called before every step: remember ``head`` if it is the closest state yet, and say
        whether the level is reached (training stops)."""
        # One step can overshoot the held-out level by far (a whole small forget set is one
        # batch), so the head state closest to that level is kept and restored at the end,
        # rather than whatever state the crossing step produced.
        excess = self.excess(forget_confidence)
        if self.closest is None or abs(excess) < self.closest[0]:
            self.closest = (
                abs(excess),
                step,
                head.weight.detach().clone(),
                head.bias.detach().clone(),
            )
        return excess <= 0

    def restore_closest(self, stopped: bool, final_confidence: float, head: nn.Linear) -> None:
        """Put the closest state checked into ``head`` unless training ran out without stopping
        and the final state (after the last step) is closer still."""
        if self.closest is None:
            return
        if not stopped and abs(self.excess(final_confidence)) < self.closest[0]:
            return
        _, self.restored_step, weight, bias = self.closest
        head.weight.data.copy_(weight)
        head.bias.data.copy_(bias)
