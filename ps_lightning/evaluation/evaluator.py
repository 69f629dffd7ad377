"""UnlearningEvaluator: `ps-lightning test` on any set of checkpoints, side by side.

One pass over the forget, retain, test and calibration splits runs every listed model on the
same batches. It writes ``metrics.json`` and a markdown ``table.md`` in its run directory
(the run's summary prints the table: `ps_lightning.console.run_summary`), the comparison chart
``comparison.png`` with the data it draws, ``comparison.json``, and logs the table's numbers,
figures (per-class accuracy among them), the table as text and an HParams row per model to
TensorBoard (the tags: `ps_lightning.evaluation.tensorboard_log`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import nn

from ps_lightning.console import progress, trainer_progress
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.distributed import gather_rows
from ps_lightning.evaluation.comparison import attack_scored_samples, comparison_data
from ps_lightning.evaluation.figures import comparison_figure, confusion_matrix
from ps_lightning.evaluation.probes import linear_probe_accuracy, relearn_steps
from ps_lightning.evaluation.report import markdown_table
from ps_lightning.evaluation.tensorboard_log import log_to_tensorboard, table_scalars
from ps_lightning.files import atomic_write, atomic_write_json, atomic_write_text
from ps_lightning.metrics import MemberPick, gaps_to_retrain, split_metrics
from ps_lightning.models.classifier import load_classifier
from ps_lightning.models.record import ClassifierRecord
from ps_lightning.run_folder import METRICS_NAME
from ps_lightning.splits import EVAL_SPLITS
from ps_lightning.timing import TIMING_NAME


def _run_timing(checkpoint: str) -> dict[str, Any] | None:
    # checkpoints live at <run>/checkpoints/model.ckpt, the run's timing at <run>/timing.json
    timing = Path(checkpoint).resolve().parent.parent / TIMING_NAME
    return json.loads(timing.read_text()) if timing.is_file() else None


class UnlearningEvaluator(L.LightningModule):
    """Evaluate checkpoints on a forget request's splits.

    Args:
        checkpoints: name → checkpoint path, e.g. ``{original: ..., retrain: ..., ps: ...}``.
        retrain: the name (a key of ``checkpoints``) of the model retrained without the forget
            set; every model's gap to it is reported. ``None``: no gaps.
        original: the name of the original model: the relearn probe counts the steps each
            model needs to come back to within 5 points of its forget accuracy. ``None``: no
            relearn probe.
        probe_size: retain samples whose features (with the calibration half of the test set)
            train the linear probe.
        relearn_size: forget samples the relearn probe fine-tunes on.
        relearn_max_steps: the relearn probe's step limit (``max + 1`` is reported if unmet).
        mia_members: which retain samples the membership attacks take as members (as many as
            the calibration non-members): ``random`` (seeded) or ``first`` (in the stored
            order, as the SalUn reference code does).
        num_classes: set from the data; checked against each checkpoint.
        in_channels: set from the data; checked against each checkpoint.
    """

    def __init__(
        self,
        checkpoints: dict[str, str],
        retrain: str | None = None,
        original: str | None = None,
        probe_size: int = 2000,
        relearn_size: int = 32,
        relearn_max_steps: int = 100,
        mia_members: MemberPick = "random",
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not checkpoints:
            raise ValueError("checkpoints is empty: name at least one checkpoint to evaluate.")
        if retrain is not None and retrain not in checkpoints:
            raise ValueError(
                f"retrain={retrain!r} is not one of the checkpoints {sorted(checkpoints)}."
            )
        self.save_hyperparameters()
        self.models = nn.ModuleDict()
        self.classifier_records: dict[str, ClassifierRecord] = {}
        for name, path in checkpoints.items():
            model, record = load_classifier(path)
            self.classifier_records[name] = ClassifierRecord.from_checkpoint_record(path, record)
            self.classifier_records[name].check_shape(num_classes, in_channels)
            self.models[name] = model
        self.outputs: dict[str, dict[str, list[torch.Tensor]]] = {}

    def check_data(self, datamodule: UnlearningDataModule) -> None:
        """Every model must come from this training set, retrain must exclude this forget set,
        and an unlearned model must be this request's result."""
        for name, record in self.classifier_records.items():
            record.check_data(
                datamodule, train_on="retain" if name == self.hparams.retrain else None
            )
            record.check_request(datamodule)

    def on_test_start(self) -> None:
        self.outputs = {name: {split: [] for split in EVAL_SPLITS} for name in self.models}
        probe_splits = ("forget", "retain", "calibration")
        self.features = {name: {split: [] for split in probe_splits} for name in self.models}
        self.labels: dict[str, list[torch.Tensor]] = {split: [] for split in EVAL_SPLITS}

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        split = EVAL_SPLITS[dataloader_idx]
        self.labels[split].append(labels)
        for name, model in self.models.items():
            features = model.forward_features(images)
            self.outputs[name][split].append(model.prototypes(features).float())
            if split in self.features[name]:
                self.features[name][split].append(features.float())

    def on_test_epoch_end(self) -> None:
        dm: UnlearningDataModule = self.trainer.datamodule
        num_classes = dm.num_classes
        labels = {s: gather_rows(self, torch.cat(v)).cpu() for s, v in self.labels.items()}
        target_classes = sorted(set(labels["forget"].tolist()))
        logits = {
            name: {s: gather_rows(self, torch.cat(v)).cpu() for s, v in splits.items()}
            for name, splits in self.outputs.items()
        }
        features = {
            name: {s: gather_rows(self, torch.cat(v)).cpu() for s, v in splits.items()}
            for name, splits in self.features.items()
        }
        results: dict[str, Any] = {}
        shown = trainer_progress(self.trainer)
        for name in progress(
            self.models, "attacks and probes", total=len(self.models), enabled=shown
        ):
            outputs = {s: (logits[name][s], labels[s]) for s in EVAL_SPLITS}
            metrics = split_metrics(outputs, num_classes, target_classes, self.hparams.mia_members)
            # Retain samples alone hold no sample of a wholly forgotten class, so the probe also
            # learns from the held-out calibration half, which does (never from forget samples).
            probe_rows = torch.randperm(
                len(labels["retain"]), generator=torch.Generator().manual_seed(0)
            )[: self.hparams.probe_size]  # seeded: the stored order may be class by class
            metrics["linear_probe_forget_acc"] = linear_probe_accuracy(
                torch.cat([features[name]["retain"][probe_rows], features[name]["calibration"]]),
                torch.cat([labels["retain"][probe_rows], labels["calibration"]]),
                features[name]["forget"],
                labels["forget"],
            )
            results[name] = {
                "checkpoint": self.hparams.checkpoints[name],
                "metrics": metrics,
                "unlearning": self.classifier_records[name].unlearning,
                "timing": _run_timing(self.hparams.checkpoints[name]),
            }
        if self.hparams.original is not None:
            self._relearn_probe(results)
        retrain = self.hparams.retrain
        if retrain is not None:
            for result in results.values():
                result["gap_to_retrain"] = gaps_to_retrain(
                    result["metrics"], results[retrain]["metrics"]
                )
        summary = {
            "dataset": dm.dataset_name,
            "request": dm.manifest["request"],
            "num_forget": dm.manifest["num_forget"],
            "num_retain": dm.manifest["num_retain"],
            "target_classes": target_classes,
            "retrain": retrain,
            # What each attack's accuracy is scored on: how far from 0.5 chance may reach.
            "attack_scored_samples": attack_scored_samples(
                len(labels["retain"]), len(labels["calibration"])
            ),
            "models": results,
        }
        table = markdown_table(summary)
        comparison = comparison_data(summary)
        figure = comparison_figure(comparison)
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir:
            # Before metrics.json, which marks the run finished.
            atomic_write_json(Path(log_dir) / "comparison.json", comparison)
            atomic_write(
                Path(log_dir) / "comparison.png", lambda f: figure.savefig(f, format="png")
            )
        self._log(summary, logits, labels, table, figure)
        if self.trainer.is_global_zero and log_dir:
            atomic_write_json(Path(log_dir) / METRICS_NAME, summary)
            atomic_write_text(Path(log_dir) / "table.md", table)

    def _relearn_probe(self, results: dict[str, Any]) -> None:
        # Lightning evaluates under inference mode; fine-tuning needs ordinary tensors.
        with torch.inference_mode(False), torch.enable_grad():
            self._relearn(results)

    def _relearn(self, results: dict[str, Any]) -> None:
        dm: UnlearningDataModule = self.trainer.datamodule
        forget = dm.samples("forget")
        images, labels = (t.to(self.device) for t in forget.tensors)
        inputs = dm.model_input(images)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        subset = order[: self.hparams.relearn_size].to(self.device)
        target = results[self.hparams.original]["metrics"]["forget_acc"] - 0.05
        shown = trainer_progress(self.trainer)
        for name, model in progress(
            self.models.items(), "relearn probes", total=len(self.models), enabled=shown
        ):
            results[name]["metrics"]["relearn_steps"] = relearn_steps(
                model,
                inputs[subset],
                labels[subset],
                inputs,
                labels,
                target,
                max_steps=self.hparams.relearn_max_steps,
            )

    def _log(
        self, summary: dict[str, Any], logits: dict, labels: dict, table: str, comparison: Figure
    ) -> None:
        if self.logger is None or not self.trainer.is_global_zero:
            return
        # Straight to the logger: these are computed once from gathered outputs, not per batch.
        self.logger.log_metrics(table_scalars(summary), step=0)
        if not isinstance(self.logger, TensorBoardLogger):
            return
        num_classes = self.trainer.datamodule.num_classes
        test_confusion = {
            name: confusion_matrix(logits[name]["test"], labels["test"], num_classes)
            for name in summary["models"]
        }
        log_to_tensorboard(
            self.logger.experiment,
            summary,
            comparison,
            test_confusion,
            table,
            self.hparams.original,
        )
