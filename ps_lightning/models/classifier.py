"""ImageClassifier: the one LightningModule every backbone shares.

A subclass only says which network to build; training, validation on the named
forget/retain/test splits, metrics and the checkpoint format live here once. Optimizer and
learning-rate schedule come from the CLI (`optimizer:` and `lr_scheduler:` in the configs).
"""

from __future__ import annotations

import inspect
import os
import random
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ps_lightning.files import safe_torch_load
from ps_lightning.run_folder import RESULT_CHECKPOINT
from ps_lightning.splits import EVAL_SPLITS
from ps_lightning.timing import RunTimer

CHECKPOINT_FORMAT = 1
# How Lightning rebuilds a module that LightningCLI built: the class path and the instantiator
# it records among the hyperparameters (`LightningModule.load_from_checkpoint` reads them).
LIGHTNING_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
# The one checkpoint later steps read: written once, atomically, when fit has finished.
FINAL_CHECKPOINT = RESULT_CHECKPOINT.name
# The resumable snapshot of an unfinished run, rewritten after every epoch (`--ckpt_path last`).
LAST_CHECKPOINT = "last"


# Every classifier class by name, filled as each is defined (`ImageClassifier.__init_subclass__`):
# a checkpoint names its architecture, and `load_classifier` rebuilds it from here alone.
ARCHITECTURES: dict[str, type[ImageClassifier]] = {}


class ImageClassifier(L.LightningModule):
    """Base classifier; ``net`` has ``forward_features`` and a final ``fc`` (the prototypes).

    The initial prototypes ``W0`` (the final layer's weight before any training step) are kept
    as the buffer ``initial_prototypes`` and so travel in every checkpoint: Naive Prototype
    Surgery needs them. The final layer's initial bias ``b0`` travels likewise, as
    ``initial_bias``.
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = self.build_network()
        self.register_buffer("initial_prototypes", self.net.fc.weight.detach().clone())
        # b0, for the bias-aware surgery that treats [W, b] against [f, 1].
        self.register_buffer("initial_bias", self.net.fc.bias.detach().clone())
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.train_loss = MeanMetric()
        self.split_accuracy = nn.ModuleDict(
            {split: MulticlassAccuracy(num_classes, average="micro") for split in EVAL_SPLITS}
        )

    # Whether a checkpoint's registry name and init arguments rebuild it (the user's own network
    # needs the live module instead), and so whether the harness can train it by name.
    rebuilt_by_name: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ARCHITECTURES[cls.__name__] = cls

    def build_network(self) -> nn.Module:
        raise NotImplementedError

    @property
    def prototypes(self) -> nn.Linear:
        return self.net.fc

    @property
    def has_initial_head(self) -> bool:
        """Whether ``initial_prototypes`` / ``initial_bias`` are known (Naive PS needs them)."""
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    def configure_callbacks(self) -> list[L.Callback]:
        # `last.ckpt` after every epoch, to resume an interrupted run (`--ckpt_path last`); it is
        # never taken for a finished model (its record says complete: false). `model.ckpt`, the
        # name later steps point at, is written by `on_fit_end` alone.
        # `save_last` alone with save_top_k=0 writes last.ckpt only when training ends; the
        # one kept "top" checkpoint without a monitor is the newest, saved every epoch.
        return [
            ModelCheckpoint(filename=LAST_CHECKPOINT, save_top_k=1, enable_version_counter=False),
            RunTimer(),
        ]

    def on_fit_start(self) -> None:
        # Metric states can stay shared between ddp_spawn ranks; start every fit from zero.
        for metric in (
            self.train_loss,
            self.train_accuracy,
            *self.split_accuracy.values(),
        ):
            metric.reset()

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        # Metric updates only: a `self.log` call per step costs ~1 ms, 3% of a LeNet5 step.
        self.train_accuracy.update(logits, labels)
        self.train_loss.update(loss.detach())
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log("train/acc", self.train_accuracy)

    def _eval_step(self, stage: str, batch: Any, dataloader_idx: int) -> None:
        images, labels = batch
        split = EVAL_SPLITS[dataloader_idx]
        logits = self(images)
        metric = self.split_accuracy[split]
        metric(logits, labels)
        self.log(f"{stage}/{split}_acc", metric, add_dataloader_idx=False, prog_bar=split == "test")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> ImageClassifier:
        """Lightning's own call for every ps-lightning classifier checkpoint: original,
        retrained or unlearned. On this base class it builds the architecture the checkpoint
        names (`ImageClassifier.load_from_checkpoint(path)` gives a `LeNet5` for a LeNet5); on
        an architecture it refuses another one's checkpoint, and any with NaN or infinite
        weights. Loads with ``weights_only=True``
        unless told otherwise; the other arguments are Lightning's."""
        checkpoint = safe_torch_load(checkpoint_path)
        record = checkpoint.get("ps_lightning") if isinstance(checkpoint, dict) else None
        name = record.get("architecture") if isinstance(record, dict) else None
        architecture = ARCHITECTURES.get(name) if isinstance(name, str) else None
        if architecture is None:
            raise ValueError(
                f"'{checkpoint_path}' is not a ps-lightning classifier checkpoint (it names no "
                f"known architecture; known: {sorted(ARCHITECTURES)})."
            )
        if not issubclass(architecture, cls):
            raise ValueError(
                f"'{checkpoint_path}' holds a {name}, not a {cls.__name__}: load it with "
                f"{name}.load_from_checkpoint or ImageClassifier.load_from_checkpoint."
            )
        # As `load_classifier` does: a diverged or damaged model would only output NaN.
        refuse_non_finite(checkpoint.get("state_dict") or {}, f"'{checkpoint_path}'")
        load = L.LightningModule.load_from_checkpoint.__func__  # Lightning's, for `architecture`
        return load(
            architecture,
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=weights_only,
            **kwargs,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The random state that orders and augments the next epoch's batches: a resumed run
        # draws what the uninterrupted one would have (Lightning keeps only the weights and
        # optimiser), so it finishes with the same model.
        checkpoint["random_state"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": random.getstate(),
        }
        # `LightningModule.load_from_checkpoint` rebuilds this class also when no LightningCLI
        # built it (Lightning records the class path only then).
        checkpoint["hyper_parameters"] = lightning_hyperparameters(
            self, checkpoint.get("hyper_parameters", {})
        )
        # What `load_classifier` needs to rebuild this model without importing any name the
        # file itself chooses: the registry name, plain init arguments, and the data it saw.
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        checkpoint["ps_lightning"] = classifier_record(
            self,
            datamodule.state_dict() if datamodule is not None else None,
            complete=getattr(self, "_writing_final", False),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only when a fit resumes: loading a model elsewhere leaves the caller's random state.
        state = checkpoint.get("random_state")
        if state is None or self._trainer is None or self.trainer.state.fn != "fit":
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            # Resumed on fewer devices than saved: each present device gets its own state back.
            for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)
        random.setstate(state["python"])

    def on_fit_end(self) -> None:
        # Reached only when fit ran to its end (an interrupt or a crash skips it), so a
        # `model.ckpt` always holds a finished model: written under a temporary name by every
        # rank's collective save, then renamed in one step by rank 0.
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        if trainer.interrupted or callback is None or callback.dirpath is None:
            return
        final = Path(callback.dirpath) / FINAL_CHECKPOINT
        partial = final.with_name(f".{FINAL_CHECKPOINT}.partial")
        self._writing_final = True
        try:
            trainer.save_checkpoint(partial)
        except BaseException:
            partial.unlink(missing_ok=True)  # a torn file of a failed write is never left
            raise
        finally:
            self._writing_final = False
        if trainer.is_global_zero:
            os.replace(partial, final)


def lightning_hyperparameters(model: ImageClassifier, saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (a checkpoint's ``hyper_parameters``) with the class path and instantiator
    that `LightningModule.load_from_checkpoint` needs to rebuild ``model``'s class; a class
    path LightningCLI recorded is kept."""
    cls = type(model)
    return {
        **saved,
        "_class_path": saved.get("_class_path", f"{cls.__module__}.{cls.__qualname__}"),
        "_instantiator": LIGHTNING_INSTANTIATOR,
    }


def classifier_record(
    model: ImageClassifier, data: dict[str, Any] | None, complete: bool = True
) -> dict[str, Any]:
    """The checkpoint's own description; ``complete`` is false for mid-training snapshots."""
    return {
        "format": CHECKPOINT_FORMAT,
        "architecture": type(model).__name__,
        "init_args": {k: v for k, v in model.hparams.items() if not k.startswith("_")},
        "data": data,
        "complete": complete,
    }


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf."""
    return [
        name
        for name, tensor in state_dict.items()
        if isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]


def refuse_non_finite(state_dict: dict[str, Any], source: str) -> None:
    """Refuse weights holding NaN or ±inf (``source`` names the file in the message)."""
    not_finite = non_finite_tensors(state_dict)
    if not_finite:
        raise ValueError(
            f"{source} holds NaN or infinite values in {not_finite[:5]}: the model diverged or "
            "the file was damaged. Train it again (e.g. with a lower learning rate)."
        )


def load_classifier(path: str) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild a classifier from a ps-lightning checkpoint, safely (no unpickling).

    Returns the model (in eval mode, on the CPU) and the checkpoint's ``ps_lightning`` record:
    architecture, init arguments and the split manifest of the data it was trained on.
    """
    checkpoint = safe_torch_load(path)
    record = checkpoint.get("ps_lightning") if isinstance(checkpoint, dict) else None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"'{path}' is not a ps-lightning classifier checkpoint: train one with "
            "`ps-lightning fit --config configs/<dataset>/original.yaml`."
        )
    cls = ARCHITECTURES.get(record["architecture"])
    if cls is None:
        raise ValueError(
            f"'{path}' names the unknown architecture {record['architecture']!r}; known: "
            f"{sorted(ARCHITECTURES)}."
        )
    if record.get("complete") is not True:
        raise ValueError(
            f"'{path}' is not a finished model: it was saved during training (an interrupted "
            "run's snapshot, or a checkpoint of an earlier ps-lightning version). Resume that "
            "run with `--ckpt_path last`, or train it again, and use its checkpoints/model.ckpt."
        )
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise ValueError(f"'{path}' holds no state_dict: it is not a ps-lightning checkpoint.")
    refuse_non_finite(state_dict, f"'{path}'")
    accepted = inspect.signature(cls).parameters
    # LightningCLI records the hyperparameters of the module it is building in a context
    # variable that every module built inside it would take as its own; shield this one.
    token = _given_hyperparameters.set(None)
    try:
        model = cls(**{k: v for k, v in record["init_args"].items() if k in accepted})
    finally:
        _given_hyperparameters.reset(token)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(
            f"'{path}' does not hold {record['architecture']} weights: {error}"
        ) from error
    return model.eval(), record
