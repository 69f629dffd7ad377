"""PSUnlearnModule: Naive Prototype Surgery and Prototype Surgery (docs/design.md §2–3) in
Lightning.

`on_fit_start` does every pass over images (the surgery index, the forget set, the retain
anchor and the held-out calibration set) once, with the backbone frozen in eval mode; the PS
epochs then run through Lightning's own loop on the cached forget features, so an epoch costs
a few small matrix products whatever the backbone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from ps_lightning.prototype_surgery.closed_form import (
    accumulate_gram,
    augmented_gram,
    naive_head_surgery,
    noise_floor_rtol,
    truncated_pinv,
    with_constant,
)
from ps_lightning.prototype_surgery.early_stop import (
    ClosestToHeldoutLevel,
    early_stop_outcome,
    heldout_confidence,
)
from ps_lightning.prototype_surgery.figures import PSFigures
from ps_lightning.prototype_surgery.ledger import Ledger, LedgerState, classifier_content_hash
from ps_lightning.prototype_surgery.soft_labels import (
    paper_cross_entropy,
    soft_cross_entropy,
    soft_labels,
)
from ps_lightning.unlearning.unlearning_module import RESULT_CHECKPOINT, UnlearningModule

# The choices of the options, typed so that `--help` lists them and the CLI refuses others;
# the tuples check the same choices for callers that build the module in Python.
SurgeryMethod = Literal["naive", "ps", "naive+ps"]
Trainable = Literal["bias", "weight", "weight+bias"]
EarlyStop = Literal["off", "on", "auto"]
AnchorTarget = Literal["labels", "outputs"]
LossName = Literal["soft", "paper"]
OptimizerName = Literal["adam", "sgd"]
SURGERY_METHODS: tuple[str, ...] = get_args(SurgeryMethod)
TRAINABLE: tuple[str, ...] = get_args(Trainable)
EARLY_STOP: tuple[str, ...] = get_args(EarlyStop)
ANCHOR_TARGETS: tuple[str, ...] = get_args(AnchorTarget)
LOSSES = {"soft": soft_cross_entropy, "paper": paper_cross_entropy}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
# Intra-op threads for head-sized work (the PS epochs on cached features, the d×d surgery
# algebra). Matrices of a few hundred rows by 64 columns gain nothing from a second thread, and
# beside other busy processes two threads took 26–31× as long as one for the same epochs
# (benchmarks/ps_request_speed.py). Feature extraction keeps the process's own setting.
HEAD_THREADS = 1


# Lightning sets this so that asking whether CUDA is available never initialises CUDA (fork
# safety); torch's `Adam.step` asks at every step. On a machine without the NVIDIA driver the
# NVML library is missing, torch retries loading it at each of those calls (~0.26 ms, 0.3 s of a
# 1,200-step PS fit; benchmarks/ps_request_speed.py), and without a driver there is no CUDA to
# initialise: the plain check is as safe and costs microseconds.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


@functools.cache
def nvml_loadable() -> bool:
    """Whether the NVIDIA management library (shipped with the driver) can be loaded."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


class HeadThreads(L.Callback):
    """The PS epochs run with ``HEAD_THREADS`` intra-op threads, and without the per-step NVML
    probe where no NVIDIA driver is installed (`NVML_CHECK`); the process's own settings are
    restored when training ends, also by an exception."""

    def __init__(self) -> None:
        self.before: int | None = None
        self.nvml_check: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(HEAD_THREADS)
        if os.environ.get(NVML_CHECK) == "1" and not nvml_loadable():
            self.nvml_check = os.environ[NVML_CHECK]
            os.environ[NVML_CHECK] = "0"

    def _restore(self) -> None:
        if self.before is not None:
            torch.set_num_threads(self.before)
            self.before = None
        if self.nvml_check is not None:
            os.environ[NVML_CHECK] = self.nvml_check
            self.nvml_check = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


@contextlib.contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PSUnlearnModule(UnlearningModule):
    """Remove a forget request from an original model by prototype surgery.

    Args:
        original_ckpt: the original model's checkpoint (read only; never modified).
        method: ``naive`` (closed-form surgery), ``ps`` (soft-label fine-tuning of the final
            layer) or ``naive+ps`` (PS starting from the Naive PS prototypes).
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
            to that level: ``on``, ``off`` (the paper) or ``auto`` (on unless the request
            removes whole classes, where retrain does not recognise held-out samples either).
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
        if epochs < 0 or lr <= 0 or retain_anchor < 0 or anchor_size < 1 or top_k < 1:
            raise ValueError("epochs, retain_anchor must be >= 0; lr, anchor_size, top_k > 0.")
        if rcond != "auto" and (isinstance(rcond, str) or not 0 <= rcond < 1):
            raise ValueError(
                f"rcond={rcond!r}: use 'auto' (the features' noise floor) or a number in [0, 1), "
                "the eigenvalue cutoff relative to the largest."
            )
        if cumulative and (method == "ps" or not use_index):
            raise ValueError(
                "cumulative requests accumulate in the surgery index of Naive PS: use them with "
                "method naive or naive+ps and use_index true."
            )
        super().__init__(original_ckpt, num_classes, in_channels)
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

    @property
    def trains(self) -> bool:
        return self.hparams.method != "naive" and self.hparams.epochs > 0

    @property
    def training_epochs(self) -> int:
        return self.hparams.epochs if self.trains else 0  # naive surgery trains for none

    @functools.cached_property
    def uses_early_stop(self) -> bool:
        # Cached: it is asked before every step, and the whole-class test scans every label.
        mode = self.hparams.early_stop
        return mode == "on" or (mode == "auto" and not self.datamodule.forgets_whole_classes)

    # ------------------------------------------------------------------ set-up
    def configure_callbacks(self) -> list[L.Callback]:
        return [*super().configure_callbacks(), HeadThreads(), PSFigures()]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        head = self.model.prototypes
        train_weight = self.hparams.trainable in ("weight", "weight+bias")
        train_bias = self.hparams.trainable in ("bias", "weight+bias")
        # Without training (naive surgery) no optimizer step ever runs, but the head stays
        # trainable: DDP refuses to wrap a module without a parameter that requires a gradient.
        head.weight.requires_grad_(train_weight or not self.trains)
        head.bias.requires_grad_(train_bias or not self.trains)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        head = self.model.prototypes
        params = [p for p in head.parameters() if p.requires_grad]
        return OPTIMIZERS[self.hparams.optimizer](
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def on_fit_start(self) -> None:
        forget = self.split_features("forget")
        self.cache["forget"] = forget
        if self.hparams.method in ("naive", "naive+ps"):
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

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What the PS epochs train on, served by the datamodule (`TrainsOnTensors`): the cached
        forget features and their soft targets; None before `on_fit_start` cached them, and for
        Naive PS, which trains on nothing."""
        forget = self.cache.get("forget", {})
        if "targets" not in forget:
            return None
        return forget["features"], forget["targets"]

    @torch.no_grad()
    def _stream_gram(self) -> tuple[torch.Tensor, torch.dtype]:
        """The Gram matrix of ``[f, 1]`` over the whole training set, one batch at a time,
        summed over processes, and the dtype the features came in."""
        total = self._zero_gram()
        feature_dtype = torch.float32
        for features, _ in self.train_feature_batches():
            accumulate_gram(total, with_constant(features))
            feature_dtype = features.dtype
        return self.trainer.strategy.reduce(total, reduce_op="sum"), feature_dtype

    @contextlib.contextmanager
    def _ledger_transaction(self) -> Iterator[LedgerState | None]:
        """The ledger held by global rank 0 alone (``None`` elsewhere and without the index):
        the other processes receive its content by broadcast, so every process operates on the
        same state while the lock is held."""
        if not self.hparams.use_index or not self.trainer.is_global_zero:
            yield None
            return
        model_hash = classifier_content_hash(self.model, self.datamodule.train_fingerprint)
        ledger = Ledger(self.original_ckpt, model_hash)
        with ledger.transaction(must_record=self.hparams.cumulative) as state:
            yield state

    def _naive_surgery(self, forget_features: torch.Tensor) -> None:
        dm = self.datamodule
        # A broadcast: every process asks, though rank 0 alone records it in the ledger.
        result = Path(self.trainer.log_dir or ".") / RESULT_CHECKPOINT
        with self._ledger_transaction() as ledger:
            shared = (ledger.tensors, ledger.removed_indices) if ledger is not None else None
            tensors, removed = self.trainer.strategy.broadcast(shared) or (None, [])
            self.index_built = tensors is None
            if tensors is None:
                full_gram, feature_dtype = self._stream_gram()
                tensors = {
                    "gram": full_gram.cpu(),
                    "removed_gram": torch.zeros_like(full_gram).cpu(),
                    # Empty: its dtype records the features' precision, which sets G⁺'s cutoff.
                    "feature_dtype": torch.empty(0, dtype=feature_dtype),
                }
            forget_gram = augmented_gram(forget_features)
            self.removed_indices = dm.forget_indices.tolist()
            if self.hparams.cumulative:
                is_new = ~torch.isin(dm.forget_indices, torch.tensor(removed, dtype=torch.long))
                new_ids = dm.forget_indices[is_new]
                new_gram = forget_gram if bool(is_new.all()) else self._gram_of(new_ids)
                tensors = {**tensors, "removed_gram": tensors["removed_gram"] + new_gram.cpu()}
                forget_gram = tensors["removed_gram"].to(self.device)
                self.removed_indices = sorted(set(removed) | set(self.removed_indices))
            self._operate(tensors, forget_gram)
            if ledger is not None and (self.index_built or self.hparams.cumulative):
                ledger.set_tensors(tensors)
            if ledger is not None and self.hparams.cumulative:
                ledger.record_request(
                    dm.forget_indices.tolist(), self.hparams.method, str(result.resolve())
                )
        if self.hparams.cumulative:
            dm.record_cumulative_removal(self.removed_indices)

    @intra_op_threads(HEAD_THREADS)
    def _operate(self, index: dict[str, Any], forget_gram: torch.Tensor) -> None:
        """Replace the head by its Naive PS result for the augmented ``forget_gram``."""
        head = self.model.prototypes
        full_gram = index["gram"].to(self.device)
        dim = full_gram.shape[0] if self.hparams.surgery_bias else full_gram.shape[0] - 1
        rtol = self.hparams.rcond
        if rtol == "auto":
            rtol = noise_floor_rtol(dim, index["feature_dtype"].dtype)
        self.surgery_rtol = float(rtol)
        self.surgery_rank = truncated_pinv(full_gram[:dim, :dim], self.surgery_rtol)[1]
        new_weight, new_bias = naive_head_surgery(
            (head.weight, head.bias),
            (self.model.initial_prototypes, self.model.initial_bias),
            full_gram,
            forget_gram,
            self.surgery_rtol,
            with_bias=self.hparams.surgery_bias,
        )
        if not (torch.isfinite(new_weight).all() and torch.isfinite(new_bias).all()):
            raise ValueError(
                f"the surgery on '{self.original_ckpt}' produced non-finite prototypes; "
                "nothing was written. Check the original checkpoint and its features."
            )
        head.weight.data.copy_(new_weight)
        head.bias.data.copy_(new_bias)

    def _zero_gram(self) -> torch.Tensor:
        dim = self.model.net.feature_dim + 1  # the augmented features [f, 1]
        return torch.zeros(dim, dim, dtype=torch.float64, device=self.device)

    def _gram_of(self, indices: torch.Tensor) -> torch.Tensor:
        if len(indices) == 0:
            return self._zero_gram()
        return augmented_gram(self.train_features(indices)["features"])

    # ------------------------------------------------------------------ PS epochs
    def _head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.prototypes(features)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
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
        probabilities = torch.softmax(self._head_logits(rows["features"]).float(), dim=1)
        return probabilities.gather(1, rows["labels"][:, None]).flatten()

    @torch.no_grad()
    def _forget_confidence(self) -> float:
        return float(self._true_class_confidence("forget").mean())

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.stopper is None:
            return None
        if self.stopper.reached(self._forget_confidence(), self.global_step, self.model.prototypes):
            self.stopped_at_epoch = self.current_epoch
            self.trainer.should_stop = True
            return -1  # skip the rest of this epoch; fit ends
        return None

    def on_train_end(self) -> None:
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
        predictions = self._head_logits(rows["features"]).argmax(dim=1)
        return (
            float((predictions == rows["labels"]).float().mean())
            if len(predictions)
            else float("nan")
        )

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
        self._log_curves(step=self.current_epoch + 1)

    # ------------------------------------------------------------------ the result
    def unlearning_record(self) -> dict[str, Any]:
        record = super().unlearning_record()
        restored_step = self.stopper.restored_step if self.stopper is not None else None
        record.update(
            {
                "removed_samples": len(self.removed_indices) or len(self.datamodule.forget_indices),
                "index_built": self.index_built,
                "early_stop_used": self.trains and self.uses_early_stop,
                "stopped_at_epoch": self.stopped_at_epoch,
                "restored_step": restored_step,
                "ps_kept_start_state": restored_step == 0,
                "surgery_rtol": self.surgery_rtol,
                "surgery_rank": self.surgery_rank,
            }
        )
        return record
