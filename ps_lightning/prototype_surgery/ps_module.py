"""PSUnlearnModule: Naive Prototype Surgery and Prototype Surgery (docs/design.md §2–3).

`on_fit_start` does every pass over images once, the backbone frozen, and Naive PS's surgery
(`naive_surgery`); the PS epochs then run through Lightning's loop on the cached forget features
(`train_dataloader`) on one intra-op thread (`threads`): a few small matrix products an epoch.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.loaders import same_order_loader
from ps_lightning.data.samplers import TensorSamples
from ps_lightning.metrics import accuracy, true_class_confidence
from ps_lightning.prototype_surgery.block_method import BlockRetraining
from ps_lightning.prototype_surgery.early_stop import (
    WHOLE_CLASS_EPOCH_LIMIT,
    ClosestToHeldoutLevel,
    early_stop_outcome,
    heldout_confidence,
)
from ps_lightning.prototype_surgery.figures import PSFigures
from ps_lightning.prototype_surgery.naive_surgery import naive_surgery, removed_earlier
from ps_lightning.prototype_surgery.options import (
    ANCHOR_TARGETS,
    EARLY_STOP,
    LOSSES,
    NAIVE_METHODS,
    NAIVE_WHOLE_CLASS,
    OPTIMIZERS,
    SURGERY_METHODS,
    TRAINABLE,
    AnchorTarget,
    EarlyStop,
    LossName,
    OptimizerName,
    SurgeryMethod,
    Trainable,
)
from ps_lightning.prototype_surgery.soft_labels import soft_cross_entropy, soft_labels
from ps_lightning.prototype_surgery.threads import HeadThreads
from ps_lightning.unlearning.unlearning_module import UnlearningModule


class PSUnlearnModule(UnlearningModule):
    """Remove a forget request from an original model by prototype surgery.

    Args:
        original_ckpt: the original model's checkpoint (read only; never modified).
        method: ``naive`` (closed-form surgery), ``ps`` (soft-label fine-tuning of the final
            layer), ``naive+ps`` (PS starting from the Naive PS prototypes), ``block`` (the
            network's last block and head retrained from a fresh start on the retain set's
            cached block inputs: forgetting that reaches the features; `block_retrain`) or
            ``auto``: ``ps`` on a request within at most half of the classes that leaves each
            of them (the paper's request), ``block`` on any other (whole classes; samples
            spread over every class, where PS lowers retain and test accuracy).
        epochs: PS epochs over the forget set (the paper: MNIST 50, others 150).
        lr: PS learning rate (the paper: MNIST 0.01, CIFAR-10 0.05, CIFAR-100 0.15,
            TinyImageNet 0.3).
        weight_decay: PS weight decay (the paper: 1e-4).
        optimizer: ``adam`` (the paper) or ``sgd``.
        top_k: how many runner-up classes inherit the true class's logit (the paper: 2).
        trainable: which part of the final layer PS trains: ``bias`` (the paper's code),
            ``weight`` (the prototypes, as the paper's text says) or ``weight+bias``.
        retain_anchor: weight of a loss on cached retain features that keeps the other
            classes in place (0: off, the paper's PS).
        anchor_size: how many retain samples the anchor uses.
        anchor_target: anchor on the retain samples' ``labels`` or the original model's
            ``outputs`` (a KL term).
        early_stop: stop PS when the forget samples are no longer recognised more
            confidently than held-out samples of their classes (the retrained model's
            behaviour), and keep the head state checked before each step that came closest
            to that level: ``on``, ``off`` (the paper) or ``auto``: on unless the request
            removes whole classes, where retrain recognises none of their samples: there PS
            runs until no forget sample is classified as its class, for up to
            ``WHOLE_CLASS_EPOCH_LIMIT`` × ``epochs`` (no per-dataset learning rate needed).
        rcond: the eigenvalue cutoff of Naive PS's pseudo-inverse ``G⁺``, relative to the
            largest eigenvalue: ``auto`` is the noise floor of the features' precision,
            ``d·ε(feature dtype)`` for the d×d Gram matrix inverted (d+1 with surgery_bias;
            7.6e-6 for 64 float32 features; derived in
            ``ps_lightning.prototype_surgery.closed_form``); a number sets it (``1.4e-14``, d·ε of
            float64, was the cutoff before: it inverts float32 rounding noise).
        surgery_bias: Naive PS operates on ``[W, b]`` against ``[f, 1]`` (the initial bias as
            the constant feature's ``W0``) instead of on ``W`` alone with ``b`` kept (the paper).
            Without it a whole-class request keeps the class's bias, and so the class.
        loss: the PS loss on the forget set: ``soft`` (soft-target cross-entropy on the
            logits) or ``paper`` (the reference code's: ``CrossEntropyLoss`` applied to the
            softmax of the logits, a double softmax; link4sourcecode/PS-Unlearning,
            ``PS-Unlearning/utils/models.py``, ``FT_relabel``).
        use_index: cache the surgery index beside the original checkpoint (the surgery ledger,
            `ps_lightning.prototype_surgery.ledger`) and reuse it.
        cumulative: successive requests against the same original model accumulate, recorded
            in the ledger under its lock: the result removes every sample of every earlier
            cumulative request too, also of requests running at the same time.
        block_epochs: method ``block``: the most epochs over the retain set; it stops at the
            first epoch whose retain accuracy reaches the original model's.
        block_lr: method ``block``: the learning rate, cosine-annealed per step to 0 over
            ``block_epochs``; optimizer and weight decay are PS's.
        block_batch_size: method ``block``: the batch size of its epochs over the cached
            inputs (``None``: the datamodule's ``batch_size``).
        block_min_steps: method ``block``: train for up to this many steps at least, in more
            epochs than ``block_epochs`` where the retain set is small (``None``: up to
            ``block_epochs`` epochs, however few steps they take).
        block_stop_rows: method ``block``: judge the stop on a fixed random sample of this
            many retain samples, the original's accuracy and each epoch's alike (``None``: on
            all of them; each judgement is a pass of the block over them).
        num_classes: set from the data; checked against the checkpoint.
        in_channels: set from the data; checked against the checkpoint.
    """

    def __init__(
        self,
        original_ckpt: str,
        method: SurgeryMethod = "ps",
        epochs: int = 50,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        optimizer: OptimizerName = "adam",
        top_k: int = 2,
        trainable: Trainable = "bias",
        retain_anchor: float = 0.0,
        anchor_size: int = 512,
        anchor_target: AnchorTarget = "labels",
        early_stop: EarlyStop = "off",
        rcond: float | Literal["auto"] = "auto",
        surgery_bias: bool = False,
        loss: LossName = "soft",
        use_index: bool = True,
        cumulative: bool = False,
        block_epochs: int = 10,
        block_lr: float = 2e-3,
        block_batch_size: int | None = None,
        block_min_steps: int | None = None,
        block_stop_rows: int | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        for name, value, allowed in (
            ("method", method, SURGERY_METHODS),
            ("trainable", trainable, TRAINABLE),
            ("early_stop", early_stop, EARLY_STOP),
            ("anchor_target", anchor_target, ANCHOR_TARGETS),
            ("optimizer", optimizer, tuple(OPTIMIZERS)),
            ("loss", loss, tuple(LOSSES)),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}.")
        if (
            min(epochs, retain_anchor) < 0
            or min(lr, anchor_size, top_k, block_epochs, block_lr) <= 0
            or min(block_batch_size or 1, block_min_steps or 1, block_stop_rows or 1) <= 0
        ):
            raise ValueError(
                "epochs, retain_anchor must be >= 0; lr, anchor_size, top_k, block_epochs, "
                "block_lr, block_batch_size, block_min_steps, block_stop_rows > 0."
            )
        if rcond != "auto" and (isinstance(rcond, str) or not 0 <= rcond < 1):
            raise ValueError(
                f"rcond={rcond!r}: use 'auto' (the features' noise floor) or a number in [0, 1), "
                "the eigenvalue cutoff relative to the largest."
            )
        if cumulative and (method not in NAIVE_METHODS or not use_index):
            raise ValueError(
                "cumulative requests accumulate in the surgery index of Naive PS: use them with "
                "method naive or naive+ps and use_index true."
            )
        super().__init__(original_ckpt, num_classes, in_channels)
        if method in NAIVE_METHODS and not self.model.has_initial_head:
            raise ValueError(
                f"Naive PS needs the head's initial weights, which '{original_ckpt}' does not "
                "carry: train with ps_lightning.RecordInitialHead in the Trainer's callbacks, or "
                "use method 'ps' (it needs none)."
            )
        self.save_hyperparameters()
        head = self.model.prototypes
        # The original prototypes, for the prototype-shift view and the anchor's targets.
        self.register_buffer("original_weight", head.weight.detach().clone(), persistent=False)
        self.register_buffer("original_bias", head.bias.detach().clone(), persistent=False)
        self.cache: dict[str, dict[str, torch.Tensor]] = {}
        self.index_built = False
        self.removed_indices: list[int] = []
        self.stopped_at_epoch: int | None = None
        self.stopper: ClosestToHeldoutLevel | None = None
        self.epoch_losses: dict[str, list[torch.Tensor]] = {}
        self.surgery_rtol: float | None = None
        self.surgery_rank: int | None = None
        # Cumulative requests: the result's split manifest, every sample removed so far.
        self.cumulative_manifest: dict[str, Any] | None = None
        self.block: BlockRetraining | None = None  # method block, from setup on

    @functools.cached_property
    def surgery_method(self) -> str:
        """``method``, with ``auto`` resolved by the request (docs/unlearning.md has the
        measurements behind the rule)."""
        if self.hparams.method != "auto":
            return self.hparams.method
        data = self.datamodule
        return "ps" if data.targets_few_classes and not data.forgets_whole_classes else "block"

    @property
    def trains(self) -> bool:
        method = self.surgery_method
        return method == "block" or (method != "naive" and self.hparams.epochs > 0)

    @property
    def training_epochs(self) -> int:
        if self.block is not None:
            return self.block.epochs
        return self.hparams.epochs if self.trains else 0  # naive surgery trains for none

    @functools.cached_property
    def uses_early_stop(self) -> bool:
        # Cached: it is asked before every step, and the whole-class test scans every label.
        # Method block has a stop of its own (the original's retain accuracy).
        mode, method = self.hparams.early_stop, self.surgery_method
        whole = self.datamodule.forgets_whole_classes
        return method != "block" and (mode == "on" or (mode == "auto" and not whole))

    @functools.cached_property
    def stops_when_forgotten(self) -> bool:
        """``auto`` on a whole-class request: PS stops on retrain's known outcome (none of the
        class's samples classified as it), not after ``epochs``."""
        # naive+ps: Naive PS has forgotten the class already; its PS epochs repair the rest.
        auto = self.hparams.early_stop == "auto" and not self.uses_early_stop
        return self.surgery_method == "ps" and self.trains and auto

    # ------------------------------------------------------------------ set-up
    def configure_callbacks(self) -> list[L.Callback]:
        return [*super().configure_callbacks(), HeadThreads(), PSFigures()]

    def check_data(self, datamodule: UnlearningDataModule) -> None:
        super().check_data(datamodule)
        self._refuse_naive_on_an_emptied_class(datamodule)

    def _refuse_naive_on_an_emptied_class(self, datamodule: UnlearningDataModule) -> None:
        """Naive PS alone (no PS epochs after it) on a request that leaves a class without any
        sample, counting earlier cumulative requests: refused before anything is written."""
        method, epochs = self.hparams.method, self.hparams.epochs
        if method == "naive" or (method == "naive+ps" and epochs == 0):
            earlier = removed_earlier(self, datamodule) if self.hparams.cumulative else []
            emptied = datamodule.emptied_classes(earlier)
            if emptied:
                raise ValueError(
                    f"{NAIVE_WHOLE_CLASS} This request leaves class(es) {emptied} without a "
                    "training sample."
                )

    def setup(self, stage: str) -> None:
        if self.surgery_method == "block":  # before the base sets the epochs it names
            self.block = BlockRetraining(self)
        super().setup(stage)
        if stage == "fit":  # also when a Trainer is given the module directly
            self._refuse_naive_on_an_emptied_class(self.datamodule)
        if self.block is not None:
            # A stored feature pass holds the original network's features, which this changes.
            self.feature_store = None
            return
        head = self.model.prototypes
        train_weight = self.hparams.trainable in ("weight", "weight+bias")
        train_bias = self.hparams.trainable in ("bias", "weight+bias")
        # Without training (naive surgery) no optimizer step ever runs, but the head stays
        # trainable: DDP refuses to wrap a module without a parameter that requires a gradient.
        head.weight.requires_grad_(train_weight or not self.trains)
        head.bias.requires_grad_(train_bias or not self.trains)
        if stage == "fit" and self.stops_when_forgotten:
            self.trainer.fit_loop.max_epochs = self.hparams.epochs * WHOLE_CLASS_EPOCH_LIMIT

    def configure_optimizers(self) -> Any:
        if self.block is not None:
            return self.block.optimizer()
        head = self.model.prototypes
        params = [p for p in head.parameters() if p.requires_grad]
        return OPTIMIZERS[self.hparams.optimizer](
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def train(self, mode: bool = True) -> PSUnlearnModule:
        super().train(mode)  # the original network in eval mode
        if mode and self.block is not None:
            self.block.block.train()  # method block: its BatchNorm and dropout train
        return self

    def on_fit_start(self) -> None:
        if self.block is not None:
            self.block.start()
            return
        forget = self.split_features("forget")
        self.cache["forget"] = forget
        if self.surgery_method in NAIVE_METHODS:
            self._naive_surgery(forget["features"])
        if not self.trains:
            return
        targets = soft_labels(forget["logits"], forget["labels"], self.hparams.top_k)
        self.cache["forget"]["targets"] = targets
        retain = self.split_features("retain_val")
        order = torch.randperm(len(retain["labels"]), generator=torch.Generator().manual_seed(0))
        anchor = {k: v[order[: self.hparams.anchor_size]] for k, v in retain.items()}
        # The original model's outputs: with naive+ps the head has already been operated on.
        original_logits = F.linear(anchor["features"], self.original_weight, self.original_bias)
        anchor["original_probabilities"] = torch.softmax(original_logits, dim=1)
        self.cache["anchor"] = anchor
        self.cache["retain"] = retain
        if self.uses_early_stop:
            self.cache["calibration"] = self.split_features("calibration")
            calibration = self.cache["calibration"]
            self.stopper = ClosestToHeldoutLevel(
                heldout_confidence(
                    F.linear(calibration["features"], self.original_weight, self.original_bias),
                    calibration["labels"],
                    forget["labels"],
                    self.model.hparams.num_classes,
                )
            )
        self._log_curves(step=0)

    def _naive_surgery(self, forget_features: torch.Tensor) -> None:
        """Naive PS on the head, and what it did kept for the record and the result."""
        hparams = self.hparams
        surgery = naive_surgery(
            self,
            forget_features,
            method=hparams.method,
            rcond=hparams.rcond,
            surgery_bias=hparams.surgery_bias,
            use_index=hparams.use_index,
            cumulative=hparams.cumulative,
        )
        self.index_built = surgery.index_built
        self.removed_indices = surgery.removed_indices
        self.surgery_rtol, self.surgery_rank = surgery.rtol, surgery.rank
        self.cumulative_manifest = surgery.manifest

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """The PS epochs' data: the cached forget features and soft targets, in one seeded
        order on every process (Naive PS: the datamodule's loader, never iterated)."""
        if not self.trains:
            return super().train_dataloader()
        if self.block is not None:
            return self.block.loader()
        forget, data = self.cache["forget"], self.datamodule.hparams
        samples = TensorSamples(forget["features"], forget["targets"])
        return same_order_loader(samples, data.batch_size, data.seed)

    # ------------------------------------------------------------------ PS epochs
    def _head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.prototypes(features)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        if self.block is not None:
            loss = self.block.loss(batch)
            self.epoch_losses.setdefault("block/loss", []).append(loss.detach())
            return loss
        features, targets = batch
        loss = LOSSES[self.hparams.loss](self._head_logits(features), targets)
        self.epoch_losses.setdefault("ps/soft_label_loss", []).append(loss.detach())
        if self.hparams.retain_anchor > 0:
            anchor = self.cache["anchor"]
            logits = self._head_logits(anchor["features"])
            if self.hparams.anchor_target == "labels":
                anchor_loss = F.cross_entropy(logits, anchor["labels"])
            else:
                anchor_loss = soft_cross_entropy(logits, anchor["original_probabilities"])
            self.epoch_losses.setdefault("ps/anchor_loss", []).append(anchor_loss.detach())
            loss = loss + self.hparams.retain_anchor * anchor_loss
        return loss

    @torch.no_grad()
    def _true_class_confidence(self, split: str) -> torch.Tensor:
        rows = self.cache[split]
        return true_class_confidence(self._head_logits(rows["features"]), rows["labels"])

    @torch.no_grad()
    def _forget_confidence(self) -> float:
        return float(self._true_class_confidence("forget").mean())

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.stops_when_forgotten and self._forgotten():
            self.stopped_at_epoch = self.current_epoch
            self.trainer.should_stop = True
            return -1
        if self.stopper is None:
            return None
        if self.stopper.reached(self._forget_confidence(), self.global_step, self.model.prototypes):
            self.stopped_at_epoch = self.current_epoch
            self.trainer.should_stop = True
            return -1  # skip the rest of this epoch; fit ends
        return None

    def _forgotten(self) -> bool:  # retrain's outcome on a whole class, one decision for all
        return self.trainer.strategy.reduce_boolean_decision(self._accuracy("forget") == 0.0)

    def on_train_end(self) -> None:
        if self.block is not None:
            self.block.block.eval()  # the result is used for inference
        if self.stops_when_forgotten and self.stopped_at_epoch is None and self._forgotten():
            self.stopped_at_epoch = self.current_epoch  # reached by the very last step
        if self.stopper is None:
            return
        self.stopper.restore_closest(
            self.trainer.should_stop, self._forget_confidence(), self.model.prototypes
        )
        kept_start = self.stopper.restored_step == 0
        if kept_start:
            outcome = early_stop_outcome(
                {
                    "early_stop_used": True,
                    "ps_kept_start_state": True,
                    "config": {"method": self.hparams.method},
                }
            )
            rank_zero_info(f"PS's early stop {outcome}.")
        if self.logger is not None:
            # The curves show every epoch tried; the head saved may be an earlier one.
            saved = {
                f"ps/saved/{split}_acc": self._accuracy(split) for split in ("forget", "retain")
            }
            saved["ps/saved/kept_start_state"] = float(kept_start)
            self.logger.log_metrics(saved, step=self.current_epoch)

    @torch.no_grad()
    def _accuracy(self, split: str) -> float:
        rows = self.cache[split]
        return accuracy(self._head_logits(rows["features"]), rows["labels"])

    def _log_curves(self, step: int) -> None:
        logger = self.logger
        if logger is None:
            return
        metrics = {f"ps/{split}_acc": self._accuracy(split) for split in ("forget", "retain")}
        metrics["ps/forget_confidence"] = self._forget_confidence()
        logger.log_metrics(metrics, step=step)

    def on_train_epoch_end(self) -> None:
        # The step losses are logged once per epoch: a `self.log` call per step cost as much as
        # the step itself (benchmarks/ps_request_speed.py). Every process trains on the same
        # rows (the served set is not sharded), so no reduction across processes is needed.
        for name, values in self.epoch_losses.items():
            self.log(name, torch.stack(values).mean())
        self.epoch_losses.clear()
        if self.block is None:
            self._log_curves(step=self.current_epoch + 1)
            return
        reached = self.block.reached_target()
        self.log("block/retain_acc", self.block.retain_acc)
        if self.trainer.strategy.reduce_boolean_decision(reached):
            self.stopped_at_epoch = self.current_epoch
            self.trainer.should_stop = True

    # ------------------------------------------------------------------ the result
    def result_manifest(self) -> dict[str, Any]:
        return self.cumulative_manifest or super().result_manifest()

    def unlearning_record(self) -> dict[str, Any]:
        record = super().unlearning_record()
        restored_step = self.stopper.restored_step if self.stopper is not None else None
        record.update(
            {
                "removed_samples": len(self.removed_indices) or len(self.datamodule.forget_indices),
                "index_built": self.index_built,
                "early_stop_used": self.trains and self.uses_early_stop,
                "whole_class_stop": self.stops_when_forgotten,
                "epoch_limit": self.trainer.fit_loop.max_epochs if self._trainer else None,
                "stopped_at_epoch": self.stopped_at_epoch,
                "restored_step": restored_step,
                "ps_kept_start_state": restored_step == 0,
                "surgery_rtol": self.surgery_rtol,
                "surgery_rank": self.surgery_rank,
                "method_run": self.surgery_method if self._trainer else self.hparams.method,
                **(self.block.record() if self.block is not None else {}),
            }
        )
        # The sentence travels with the record, so the run summary and the tables read it
        # rather than re-deriving PS's rules.
        record["early_stop_outcome"] = early_stop_outcome(record)
        return record
