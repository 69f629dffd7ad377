"""What a finished ``fit`` reports first in its summary: its result's forget, retain and test
accuracy, from the features PS cached where it has them (`result_accuracy`)."""

from __future__ import annotations

import lightning as L
import torch

from ps_lightning.console import ResultAccuracy
from ps_lightning.metrics import accuracy
from ps_lightning.prototype_surgery.ps_module import PSUnlearnModule
from ps_lightning.unlearning.unlearning_module import UnlearningModule

# The splits a fit's result is scored on for its summary, as a training run's curves are.
SUMMARY_SPLITS = ("forget", "retain_val", "test")
# The names a training run logs them under, ``val/<name>_acc``, in the same order.
EVAL_SUMMARY_NAMES = ("forget", "retain", "test")
# PS keeps the frozen backbone's features of some of them (`PSUnlearnModule.cache`, by its own
# key): its head scores those without a pass over the images.
PS_CACHED_SPLITS = {"forget": "forget", "retain_val": "retain"}


def _cached_rows(model: UnlearningModule, split: str) -> dict[str, torch.Tensor] | None:
    if not isinstance(model, PSUnlearnModule):
        return None
    return model.cache.get(PS_CACHED_SPLITS.get(split, ""))


@torch.no_grad()
def _unlearned_accuracy(model: UnlearningModule, trainer: L.Trainer) -> ResultAccuracy:
    # After fit Lightning has moved the module to the CPU: a pass over images runs on the
    # Trainer's device again, in eval mode (BatchNorm statistics untouched), and the module is
    # left as it was found.
    moved_from = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[float | None] = []
    counts: list[int | None] = []
    try:
        for split in SUMMARY_SPLITS:
            rows = _cached_rows(model, split)
            if rows is not None:
                device = model.model.prototypes.weight.device
                rows = model.head_outputs(rows["features"].to(device), rows["labels"].to(device))
            elif trainer.world_size == 1:  # a pass under several processes is a collective
                model.to(trainer.strategy.root_device)
                rows = model.split_features(split)
            if rows is None:
                scores.append(None)
                counts.append(None)
                continue
            scores.append(accuracy(rows["logits"], rows["labels"]))
            counts.append(len(rows["labels"]))
    finally:
        model.to(moved_from)
        model.train(was_training)
    forget, retain, test = scores
    return ResultAccuracy(forget, retain, test, samples=(counts[0], counts[1], counts[2]))


def result_accuracy(
    subcommand: str | None, trainer: L.Trainer, model: L.LightningModule
) -> ResultAccuracy | None:
    """A finished fit's result on its forget set, the retain set's validation subset and the
    test set: what the summary reports first; ``None`` for other subcommands.

    An unlearning method's result is scored on those splits, from the features PS cached
    where it has them, by a pass over the images otherwise (on a single process; under several
    the uncached splits are left to `ps-lightning test`). A training run's are its last
    validation epoch's, which Lightning computed already.
    """
    if subcommand != "fit" or trainer.interrupted:
        return None
    if isinstance(model, UnlearningModule):
        return _unlearned_accuracy(model, trainer)
    logged = [trainer.callback_metrics.get(f"val/{split}_acc") for split in EVAL_SUMMARY_NAMES]
    if all(value is None for value in logged):
        return None
    forget, retain, test = (None if value is None else float(value) for value in logged)
    return ResultAccuracy(forget, retain, test)
