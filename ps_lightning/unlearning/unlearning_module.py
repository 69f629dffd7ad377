"""UnlearningModule: what every unlearning method shares.

It loads the original classifier from its checkpoint (never modifying that file), checks the
checkpoint against the forget request's split before anything runs, trains on a loader of its
own making (`train_dataloader`, built from the datamodule's splits: the datamodule knows no
method), extracts features exactly (float32, no autocast, every sample once across processes),
and saves the unlearned classifier as a new checkpoint in the same format as the original, so
that evaluation, later requests and `ImageClassifier` users read it like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ps_lightning.console import progress, trainer_progress
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.distributed import gather_rows
from ps_lightning.files import atomic_torch_save
from ps_lightning.models.classifier import (
    ImageClassifier,
    classifier_record,
    lightning_hyperparameters,
    load_classifier,
    non_finite_tensors,
)
from ps_lightning.models.device_speed import cpu_feature_pass
from ps_lightning.models.record import ClassifierRecord
from ps_lightning.run_folder import RESULT_CHECKPOINT
from ps_lightning.timing import RunTimer

# The splits that do not depend on the forget request; the others are rows of "train".
REQUEST_FREE_SPLITS = ("train", "test", "calibration")


class FeatureStore:
    """The frozen backbone's features and labels of one original model on one dataset, kept
    across the requests that one process makes against it (the Python API's `Unlearner`): a
    request then cuts its splits from them and passes no image through the backbone again.

    ``train``, ``test`` and ``calibration`` are extracted on first use, in the batches a run
    without the store uses (so the Gram matrix streamed from them is the same); ``forget``,
    ``retain`` and ``retain_val`` are rows of ``train``.
    """

    def __init__(self) -> None:
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def features(
        self,
        split: str,
        datamodule: UnlearningDataModule,
        extract: Callable[[str], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, labels)`` of a named split of ``datamodule``; ``extract`` passes a
        request-free split through the backbone."""
        if split not in REQUEST_FREE_SPLITS:
            features, labels = self.features("train", datamodule, extract)
            rows = datamodule.train_indices(split).to(features.device)
            return features[rows], labels[rows]
        if split not in self.splits:
            self.splits[split] = extract(split)
        return self.splits[split]


class UnlearningModule(L.LightningModule):
    """Base of the unlearning methods.

    Args:
        original_ckpt: checkpoint of the original model (trained with ``train_on: full``).
        num_classes: set from the data by the CLI; must match the checkpoint.
        in_channels: set from the data by the CLI; must match the checkpoint.

    ``feature_store``, when set (by the Python API), serves the feature passes of methods that
    keep the backbone frozen (`split_features`, `train_features`, `train_feature_batches`).
    """

    feature_store: FeatureStore | None = None

    def __init__(
        self, original_ckpt: str, num_classes: int | None = None, in_channels: int | None = None
    ) -> None:
        super().__init__()
        self.original_ckpt = str(original_ckpt)
        model, record = load_classifier(self.original_ckpt)
        self.original_record = ClassifierRecord.from_checkpoint_record(self.original_ckpt, record)
        self.original_record.check_shape(num_classes, in_channels)
        self.model: ImageClassifier = model
        self.model.requires_grad_(False)
        # False for a result kept in memory alone (the Python API without save_to): nothing is
        # written, and the ledger records no result file.
        self.writes_result = True

    # ------------------------------------------------------------------ checks
    def check_data(self, datamodule: UnlearningDataModule) -> None:
        """Refuse a forget request that was not drawn from the original model's training set."""
        self.original_record.check_data(datamodule, train_on="full")

    # ------------------------------------------------------------------ Lightning hooks
    def train(self, mode: bool = True) -> UnlearningModule:
        # The original network stays in eval mode throughout: BatchNorm statistics and dropout
        # of the frozen backbone must not change while the head is trained.
        super().train(mode)
        self.model.eval()
        return self

    def configure_callbacks(self) -> list[L.Callback]:
        return [RunTimer()]

    @property
    def training_epochs(self) -> int:
        """Epochs the method trains for (0: all its work happens in ``on_fit_start``)."""
        return 0

    def setup(self, stage: str) -> None:
        # Epochs are a property of the method, not of the Trainer: a config cannot leave a stale
        # trainer.max_epochs in charge.
        self.trainer.fit_loop.max_epochs = self.training_epochs
        # Lightning takes the training loader from the datamodule when one is given, and offers
        # no public way to take it from the module instead: a method trains on data of its own
        # choosing (`train_dataloader`), so the fit loop is pointed at the method.
        self.trainer.fit_loop._data_source.instance = self
        # Checked before any work: a result is never written over an existing file (without a
        # logger, the run directory is the working directory).
        log_dir = self.trainer.log_dir
        target = Path(log_dir or ".") / RESULT_CHECKPOINT
        if target.exists() or target.resolve() == Path(self.original_ckpt).resolve():
            raise FileExistsError(
                f"'{target}' exists already; unlearning never overwrites a checkpoint. Choose "
                "another run (--run NAME) or another trainer.logger save_dir."
            )

    @property
    def datamodule(self) -> UnlearningDataModule:
        return self.trainer.datamodule

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """What the method trains on; by default the datamodule's configured training loader (a
        method without training epochs is asked for one all the same, and never iterates it)."""
        return self.datamodule.train_dataloader()

    # ------------------------------------------------------------------ exact feature passes
    def iter_features(
        self, loader: DataLoader, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` per batch of this process's shard: float32, autocast off (a
        Gram matrix under bf16 has ~1e-3 error), the datamodule's eval transform. ``forward``
        (default: the network's ``forward_features``) maps the model input to the rows kept."""
        forward = forward or self.model.forward_features
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, enabled=False),
            cpu_feature_pass(self.model.net, forward, self.device) as fast_forward,
        ):
            shown = trainer_progress(self.trainer)
            for batch in progress(loader, "feature pass", total=len(loader), enabled=shown):
                images, labels = (t.to(self.device, non_blocking=True) for t in batch)
                yield fast_forward(self.datamodule.model_input(images)).float(), labels

    @torch.no_grad()
    def extract_rows(
        self, loader: DataLoader, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`iter_features` of every sample of ``loader`` and their labels, gathered on each
        process: under DDP each process sees a disjoint shard, and every process ends with all
        rows."""
        forward = forward or self.model.forward_features
        rows, labels = [], []
        for batch_rows, batch_labels in self.iter_features(loader, forward):
            rows.append(batch_rows)
            labels.append(batch_labels)
        if not rows:  # this process's shard is empty (fewer samples than processes)
            images, no_labels = (t[:0].to(self.device) for t in loader.dataset.tensors)
            with torch.autocast(self.device.type, enabled=False):
                rows, labels = [forward(self.datamodule.model_input(images)).float()], [no_labels]
        return gather_rows(self, torch.cat(rows)), gather_rows(self, torch.cat(labels))

    @torch.no_grad()
    def extract(self, loader: DataLoader) -> dict[str, torch.Tensor]:
        """Features, logits and labels of every sample of ``loader``, gathered on each process."""
        return self.head_outputs(*self.extract_rows(loader))

    def head_outputs(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features, labels and the logits of the current head on them."""
        head = self.model.prototypes
        # Stored features may sit on the device they were extracted on, the head elsewhere
        # (Lightning moves the module back to the CPU after fit).
        features, labels = features.to(head.weight.device), labels.to(head.weight.device)
        logits = features @ head.weight.float().T + head.bias.float()
        return {"features": features, "labels": labels, "logits": logits}

    def _extract_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.extract(self.datamodule.eval_dataloader(split))
        return rows["features"], rows["labels"]

    def _stored(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.feature_store is not None
        return self.feature_store.features(split, self.datamodule, self._extract_split)

    def split_features(self, split: str) -> dict[str, torch.Tensor]:
        """`extract` of a named split of the datamodule, cut from the feature store if set."""
        if self.feature_store is None:
            return self.extract(self.datamodule.eval_dataloader(split))
        return self.head_outputs(*self._stored(split))

    def train_features(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """`extract` of training samples by index, cut from the feature store if set."""
        if self.feature_store is None:
            return self.extract(
                self.datamodule.eval_dataloader(self.datamodule.train_subset(indices))
            )
        features, labels = self._stored("train")
        rows = indices.to(features.device)
        return self.head_outputs(features[rows], labels[rows])

    def train_feature_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`iter_features` over the whole training set, in the eval loader's batches; from the
        feature store if set."""
        if self.feature_store is None:
            yield from self.iter_features(self.datamodule.eval_dataloader("train"))
            return
        features, labels = self._stored("train")
        batch_size = self.datamodule.hparams.eval_batch_size
        yield from zip(features.split(batch_size), labels.split(batch_size), strict=True)

    # ------------------------------------------------------------------ the result
    def unlearning_record(self) -> dict[str, Any]:
        """What the method did; stored in the result checkpoint."""
        config = {k: v for k, v in self.hparams.items() if k != "original_ckpt"}
        return {
            "method": type(self).__name__,
            "original_ckpt": self.original_ckpt,
            "config": config,
        }

    def result_manifest(self) -> dict[str, Any]:
        """The split manifest of the result: the samples it no longer holds."""
        assert self.datamodule.manifest is not None
        return self.datamodule.manifest

    def result_checkpoint(self, complete: bool = True) -> dict[str, Any]:
        data = {
            **self.datamodule.state_dict(),
            "split_manifest": self.result_manifest(),
            "train_on": "unlearned",
        }
        record = classifier_record(self.model, data, complete=complete)
        record["unlearning"] = self.unlearning_record()
        return {
            "state_dict": self.model.state_dict(),
            "hyper_parameters": lightning_hyperparameters(
                self.model, dict(self.original_record.init_args)
            ),
            "ps_lightning": record,
            "pytorch-lightning_version": L.__version__,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Any checkpoint of an unlearning run (also one the user asks Lightning for) holds the
        # unlearned classifier in the original's format, not this wrapper.
        checkpoint.update(self.result_checkpoint(complete=False))

    def on_fit_end(self) -> None:
        broken = non_finite_tensors(self.model.state_dict())
        if broken:
            # A diverged method (e.g. gradient ascent at too high a learning rate) must fail
            # here, not hand NaN weights to the evaluation.
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite weights in {len(broken)} tensors "
                f"(first: {broken[0]}); no result was written. Lower the learning rate or the "
                "epochs of this method."
            )
        log_dir = self.trainer.log_dir
        if self.writes_result and self.trainer.is_global_zero and log_dir:
            atomic_torch_save(Path(log_dir) / RESULT_CHECKPOINT, self.result_checkpoint())
