"""The Python API: forget samples of an original model from a notebook, in about three lines.

    unlearner = Unlearner.from_checkpoint("runs/digits/expid0/original/checkpoints/model.ckpt",
                                          data=DigitsDataModule())
    result = unlearner.forget([3, 17, 42], method="naive")
    result.model, result.metrics

A model trained elsewhere (the user's own ``nn.Module`` or ``LightningModule``, e.g. a
torchvision or timm network) comes in through `Unlearner.from_module`; `ForgetResult.network`
gives it back in its own form with the unlearned head, and `Unlearner.metrics` scores any model
(e.g. one retrained without the request) on a request's splits.

Each request runs `PSUnlearnModule` (Naive PS, PS or both) through a Lightning Trainer, exactly
as `ps-lightning fit --config configs/<dataset>/ps.yaml` does, and its metrics are the
evaluation's (`ps_lightning.metrics.split_metrics`). The `Unlearner` keeps the frozen
backbone's features of the training and test sets (`FeatureStore`), and Naive PS's surgery index
lives in the ledger beside the checkpoint, so the requests after the first pass no image
through the backbone.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ps_lightning.console import quiet_known_noise
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.image_folder import ImageFolderDataModule
from ps_lightning.data.requests import (
    draw_forget_indices,
    indices_request,
    request_record,
    sample_ids,
    validate_request,
)
from ps_lightning.metrics import MemberPick, split_metrics
from ps_lightning.models.classifier import ImageClassifier
from ps_lightning.models.initial_head import InitialHead, RecordInitialHead
from ps_lightning.models.user_network import (
    UserNetwork,
    check_head_split,
    save_original,
    supplying_network,
    wrap_user_network,
)
from ps_lightning.presets import Preset, ps_options
from ps_lightning.prototype_surgery.ps_module import PSUnlearnModule, SurgeryMethod
from ps_lightning.run_folder import CONFIG_NAME, RESULT_CHECKPOINT, finished_run_error
from ps_lightning.splits import EVAL_SPLITS
from ps_lightning.unlearning.unlearning_module import FeatureStore


@dataclass
class ForgetResult:
    """One request's outcome.

    ``model``: the unlearned classifier (eval mode, on the request's device); ``forget_indices``:
    the training samples it removed (with ``cumulative``: every cumulative request's);
    ``seconds``: the wall time of the request's Trainer fit (not of drawing its split);
    ``record``: what the method did, as its checkpoint records it (index built or reused, early
    stop, surgery rank, ...); ``checkpoint``: where the result was saved, ``None`` unless
    ``save_to`` was given; ``settings``: where the options not passed came from (the
    dataset's shipped settings or the paper's); ``changed_predictions``: how many forget samples
    the new model classifies otherwise than the original (0: the request changed nothing seen).
    ``metrics`` are computed on first access.
    """

    model: ImageClassifier
    forget_indices: list[int]
    seconds: float
    record: dict[str, Any]
    checkpoint: Path | None
    settings: str
    changed_predictions: int
    _module: PSUnlearnModule = field(repr=False)
    _member_pick: MemberPick = field(repr=False)

    @property
    def network(self) -> nn.Module:
        """The unlearned model in its owner's form: for `Unlearner.from_module`, a copy of the
        user's own module with the new head in place of the old; otherwise ``model``."""
        if isinstance(self.model, UserNetwork):
            return self.model.net.joined().eval()
        return self.model

    @functools.cached_property
    def metrics(self) -> dict[str, float | list[float | None]]:
        """The evaluation's metrics of the new model (`split_metrics`: forget, retain and test
        accuracy, per class too, target-class test accuracy, both membership attacks), from the
        kept features: the backbone is frozen, so the new head on them is the new model."""
        module = self._module
        outputs = {}
        with torch.no_grad():
            for split in EVAL_SPLITS:
                rows = module.split_features(split)
                outputs[split] = (rows["logits"].cpu(), rows["labels"].cpu())
        target_classes = sorted(set(outputs["forget"][1].tolist()))
        return split_metrics(
            outputs, module.datamodule.num_classes, target_classes, self._member_pick
        )


class Unlearner:
    """Forget requests against one original model on one dataset.

    Build it with `from_checkpoint`; every `forget` call is an independent request against the
    original model unless ``cumulative=True`` is passed (as in the CLI).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        data: UnlearningDataModule,
        accelerator: str = "cpu",
        member_pick: MemberPick = "random",
    ) -> None:
        self.checkpoint = str(checkpoint)
        self.data = data
        self.accelerator = accelerator
        self.member_pick = member_pick
        self.feature_store = FeatureStore()
        # `from_module`: the user's live network (never rebuilt from a file) and, without a
        # workdir, the temporary folder its checkpoint and ledger live in.
        self.network: nn.Module | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        data: UnlearningDataModule,
        accelerator: str = "cpu",
        member_pick: MemberPick = "random",
    ) -> Unlearner:
        """An unlearner for the original model in ``checkpoint`` (read, never written; the
        surgery index is cached beside it, as by the CLI), trained on ``data``'s training set.

        ``data``: the datamodule of that dataset (its request settings are not used: each
        `forget` call names its own); ``accelerator``: the Trainer's (``cpu``, ``gpu``,
        ``auto``); ``member_pick``: the membership attacks' members (`split_metrics`).
        Refuses a checkpoint not trained on ``data``'s full training set.
        """
        unlearner = cls(checkpoint, data, accelerator, member_pick)
        PSUnlearnModule(
            unlearner.checkpoint, num_classes=data.num_classes, in_channels=data.in_channels
        ).check_data(data)
        return unlearner

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        data: UnlearningDataModule,
        *,
        initial_head: InitialHead | str | Path | None = None,
        head: str | None = None,
        workdir: str | Path | None = None,
        accelerator: str = "cpu",
        member_pick: MemberPick = "random",
    ) -> Unlearner:
        """An unlearner for a model trained outside ps-lightning, on ``data``'s full training set
        (taken on trust: the model carries no record of its data), with the inputs ``data``
        gives (its normalisation must be the one the model was trained with).

        ``model``: any ``nn.Module`` or ``LightningModule`` whose forward returns the logits of
        a final ``nn.Linear``; ``head`` names that layer (``None``: found, as for
        `TorchvisionClassifier`; the split is checked on a batch of ``data``).
        ``initial_head``: the head's weights before training, for Naive PS: a
        `RecordInitialHead`'s ``initial_head``, or the path of a checkpoint its Trainer wrote;
        ``None``: Naive PS refuses, PS works. ``workdir``: where the model's ps-lightning
        checkpoint and its deletion ledger live (the ledger's guarantees hold there across
        sessions; ``None``: a temporary folder kept as long as the unlearner). The module is
        copied, never changed.
        """
        if isinstance(initial_head, (str, Path)):
            initial_head = RecordInitialHead.read(initial_head)
        classifier = wrap_user_network(
            model, data.num_classes, data.in_channels, head, initial_head
        )
        device = next(model.parameters()).device
        images = data.samples("test").tensors[0][:8].to(device)
        check_head_split(model, classifier.to(device), data.model_input(images))
        scratch = None
        if workdir is None:
            scratch = tempfile.TemporaryDirectory(prefix="ps-lightning-")
            workdir = scratch.name
        checkpoint = Path(workdir) / "original" / RESULT_CHECKPOINT
        save_original(classifier.cpu(), data, checkpoint)
        with supplying_network(model):
            unlearner = cls.from_checkpoint(checkpoint, data, accelerator, member_pick)
        unlearner.network = model
        unlearner._scratch = scratch
        return unlearner

    def forget(
        self,
        ids: Sequence[int] | None = None,
        *,
        classes: Sequence[int] | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        method: SurgeryMethod | None = None,
        preset: Preset = "shipped",
        save_to: str | Path | None = None,
        **options: Any,
    ) -> ForgetResult:
        """Remove training samples from the original model.

        Name them by ``ids`` (training-set indices), or draw a request as the datamodule does:
        ``ratio`` of each of ``classes`` (1.0: whole classes) or, without ``classes``, ``ratio``
        of the whole training set, drawn with ``seed`` (default: the datamodule's).
        ``method``: ``naive``, ``ps``, ``naive+ps``, ``block`` or ``auto`` (default: the
        preset's: ``auto`` shipped, ``ps`` the paper's); ``options``: any other
        `PSUnlearnModule` argument (``epochs``, ``lr``, ``early_stop``, ``cumulative``, ...).
        ``preset``: where the options not given come from: ``shipped``, the dataset's
        ``configs/<dataset>/ps.yaml`` as ``ps-lightning fit`` runs it (the paper's, with a
        warning, for a dataset without one); ``paper``, `PSUnlearnModule`'s defaults. A request
        that leaves the model unchanged warns, saying why.
        ``save_to``: a run folder to save the result in as the CLI does
        (``checkpoints/model.ckpt``, ``split.json``, ``timing.json``); by default nothing is
        kept on disk but the surgery index beside the original checkpoint.
        """
        quiet_known_noise()  # Lightning's tips and banners, as the CLI filters them
        if save_to is not None:
            _refuse_taken(Path(save_to))
        request_data = self._request_data(ids, classes, ratio, seed)
        fallback = "image_folder" if isinstance(self.data, ImageFolderDataModule) else None
        shipped, settings = ps_options(request_data.dataset_name, preset, fallback=fallback)
        if preset == "shipped" and not shipped:
            warnings.warn(f"forget: {settings}.", UserWarning, stacklevel=2)
        options = {**shipped, **options, **({"method": method} if method else {})}
        with self._supplying_network():
            result = self._forget(request_data, save_to, options, settings)
        if result.changed_predictions == 0:
            why = result.record.get("early_stop_outcome") or "its head classifies them as before"
            warnings.warn(
                f"forget: no forget sample is classified otherwise than by the original model "
                f"({result.record['method_run']}: {why}).",
                UserWarning,
                stacklevel=2,
            )
        return result

    def _supplying_network(self) -> contextlib.AbstractContextManager:
        if self.network is None:
            return contextlib.nullcontext()
        return supplying_network(self.network)

    def _forget(
        self,
        request_data: UnlearningDataModule,
        save_to: str | Path | None,
        options: dict[str, Any],
        settings: str,
    ) -> ForgetResult:
        module = PSUnlearnModule(
            self.checkpoint,
            num_classes=request_data.num_classes,
            in_channels=request_data.in_channels,
            **options,
        )
        module.check_data(request_data)
        module.feature_store = self.feature_store
        module.writes_result = save_to is not None
        with tempfile.TemporaryDirectory(prefix="ps-lightning-") as scratch:
            run_dir = Path(save_to) if save_to is not None else Path(scratch)
            trainer = L.Trainer(
                accelerator=self.accelerator,
                devices=1,
                max_epochs=1,  # the method sets its own epochs in setup, once it sees the data
                limit_val_batches=0,  # PS has no validation step
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                default_root_dir=run_dir,
            )
            started = time.perf_counter()
            trainer.fit(module, datamodule=request_data)
            seconds = time.perf_counter() - started
        model = module.model.requires_grad_(True).eval()
        with torch.no_grad():
            forget = module.split_features("forget")
            if module.block is not None:  # the network's features changed too
                before = module.block.original_forget_predictions()
            else:
                original = F.linear(
                    forget["features"], module.original_weight, module.original_bias
                )
                before = original.argmax(1)
            changed = int((forget["logits"].argmax(1).cpu() != before.cpu()).sum())
        return ForgetResult(
            model=model,
            forget_indices=list(module.result_manifest()["forget_indices"]),
            seconds=seconds,
            record=module.unlearning_record(),
            checkpoint=run_dir / RESULT_CHECKPOINT if save_to is not None else None,
            settings=settings,
            changed_predictions=changed,
            _module=module,
            _member_pick=self.member_pick,
        )

    @torch.no_grad()
    def metrics(
        self, model: nn.Module, ids: Sequence[int]
    ) -> dict[str, float | list[float | None]]:
        """The evaluation's metrics (`split_metrics`) of any classifier on the request of
        ``ids``: e.g. a model retrained without them, beside a `forget` result's ``metrics``."""
        request_data = self._request_data(ids, None, None, None)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        outputs = {}
        try:
            for split in EVAL_SPLITS:
                logits, labels = [], []
                for batch in request_data.eval_dataloader(split):
                    inputs = request_data.model_input(batch.images.to(device))
                    logits.append(model(inputs).float().cpu())
                    labels.append(batch.labels)
                outputs[split] = (torch.cat(logits), torch.cat(labels))
        finally:
            model.train(was_training)
        target_classes = sorted(set(outputs["forget"][1].tolist()))
        return split_metrics(outputs, request_data.num_classes, target_classes, self.member_pick)

    def _request_data(
        self,
        ids: Sequence[int] | None,
        classes: Sequence[int] | None,
        ratio: float | None,
        seed: int | None,
    ) -> UnlearningDataModule:
        """The datamodule of one request: ``ids``, or ``ratio`` of ``classes`` / of all."""
        data = self.data
        if ids is not None:
            if classes is not None or ratio is not None or seed is not None:
                raise ValueError(
                    "forget either ids, or a request drawn by classes/ratio/seed; not both."
                )
            chosen = sorted(sample_ids(ids, "forget(ids=...)"))
            return data.with_forget_set(chosen, indices_request(chosen))
        if ratio is None:
            raise ValueError(
                "name the samples to forget: ids=[...], or ratio=... (of classes=[...], or of "
                "the whole training set without classes)."
            )
        kind = "random" if classes is None else "classes"
        class_list = [int(c) for c in classes or []]
        seed = int(data.hparams.seed if seed is None else seed)
        validate_request(kind, class_list, ratio, data.num_classes, None)
        labels = data.samples("train").tensors[1]
        forget = draw_forget_indices(labels, kind, class_list, ratio, seed)
        request = request_record(kind, class_list, ratio, seed, None)
        return data.with_forget_set(forget.tolist(), request)


def _refuse_taken(save_to: Path) -> None:
    """``save_to`` must not hold a run already: a finished one (the command's, the harness's or
    an earlier ``save_to``) or one the command started (its config.yaml)."""
    fix = "pass another save_to folder, or delete that one to redo it"
    finished = finished_run_error(save_to, fix)
    if finished is not None:
        raise finished
    if (save_to / CONFIG_NAME).is_file():
        raise FileExistsError(
            f"the folder '{save_to}' holds a run the command started (its {CONFIG_NAME}): {fix}."
        )
