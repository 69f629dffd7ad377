"""Naive Prototype Surgery on the running module (docs/design.md §2, §6): the Gram matrix of the
whole training set, the ledger transaction that caches it and records cumulative requests, the
surgery of the head, and the split manifest of a cumulative result.

Under DDP global rank 0 alone holds the ledger (its lock, its reads and writes) and broadcasts
its state, so every process operates on the same tensors while the lock is held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.data.manifest import MANIFEST_NAME, cumulative_manifest, write_manifest
from ps_lightning.prototype_surgery.closed_form import (
    Rcond,
    accumulate_gram,
    augmented_gram,
    cutoff_rtol,
    naive_head_surgery,
    with_constant,
)
from ps_lightning.prototype_surgery.ledger import Ledger, LedgerState, classifier_content_hash
from ps_lightning.prototype_surgery.threads import HEAD_THREADS, intra_op_threads
from ps_lightning.run_folder import RESULT_CHECKPOINT
from ps_lightning.unlearning.unlearning_module import UnlearningModule


@dataclass(frozen=True)
class SurgeryOutcome:
    """What a surgery did: whether it built the index (not found in the ledger), the samples
    the new head no longer holds, the pseudo-inverse's cutoff and rank, and for cumulative
    requests the split manifest of the result (every sample removed so far)."""

    index_built: bool
    removed_indices: list[int]
    rtol: float
    rank: int
    manifest: dict[str, Any] | None


def naive_surgery(
    module: UnlearningModule,
    forget_features: torch.Tensor,
    *,
    method: str,
    rcond: Rcond,
    surgery_bias: bool,
    use_index: bool,
    cumulative: bool,
) -> SurgeryOutcome:
    """Replace ``module``'s head by its Naive PS result for the forget request (its forget
    samples' features: ``forget_features``), and with ``cumulative`` for every sample that the
    ledger's earlier cumulative requests removed too; the options are `PSUnlearnModule`'s."""
    trainer, data = module.trainer, module.datamodule
    # A broadcast: every process asks, though rank 0 alone records it in the ledger.
    result = Path(trainer.log_dir or ".") / RESULT_CHECKPOINT
    with _ledger_transaction(module, use_index, cumulative) as ledger:
        shared = (ledger.tensors, ledger.removed_indices) if ledger is not None else None
        tensors, removed = trainer.strategy.broadcast(shared) or (None, [])
        index_built = tensors is None
        if tensors is None:
            full_gram, feature_dtype = _stream_gram(module)
            tensors = {
                "gram": full_gram.cpu(),
                "removed_gram": torch.zeros_like(full_gram).cpu(),
                # Empty: its dtype records the features' precision, which sets G⁺'s cutoff.
                "feature_dtype": torch.empty(0, dtype=feature_dtype),
            }
        forget_gram = augmented_gram(forget_features)
        removed_indices = data.forget_indices.tolist()
        if cumulative:
            is_new = ~torch.isin(data.forget_indices, torch.tensor(removed, dtype=torch.long))
            new_ids = data.forget_indices[is_new]
            new_gram = forget_gram if bool(is_new.all()) else _gram_of(module, new_ids)
            tensors = {**tensors, "removed_gram": tensors["removed_gram"] + new_gram.cpu()}
            forget_gram = tensors["removed_gram"].to(module.device)
            removed_indices = sorted(set(removed) | set(removed_indices))
        rtol, rank = _operate(module, tensors, forget_gram, rcond, surgery_bias)
        if ledger is not None and (index_built or cumulative):
            ledger.set_tensors(tensors)
        if ledger is not None and cumulative:
            kept = str(result.resolve()) if module.writes_result else None
            ledger.record_request(data.forget_indices.tolist(), method, kept)
    manifest = _write_cumulative_manifest(module, removed_indices) if cumulative else None
    return SurgeryOutcome(index_built, removed_indices, rtol, rank, manifest)


@contextlib.contextmanager
def _ledger_transaction(
    module: UnlearningModule, use_index: bool, must_record: bool
) -> Iterator[LedgerState | None]:
    """The ledger held by global rank 0 alone (``None`` elsewhere and without the index)."""
    if not use_index or not module.trainer.is_global_zero:
        yield None
        return
    model_hash = classifier_content_hash(module.model, module.datamodule.train_fingerprint)
    ledger = Ledger(module.original_ckpt, model_hash)
    with ledger.transaction(must_record=must_record) as state:
        yield state


def removed_earlier(module: UnlearningModule, data: UnlearningDataModule) -> list[int]:
    """The samples the ledger's recorded cumulative requests removed (read without its lock:
    a check before a run, which the transaction repeats)."""
    model_hash = classifier_content_hash(module.model, data.train_fingerprint)
    return Ledger(module.original_ckpt, model_hash).read().removed_indices


def _zero_gram(module: UnlearningModule) -> torch.Tensor:
    dim = module.model.prototypes.in_features + 1  # the augmented features [f, 1]
    return torch.zeros(dim, dim, dtype=torch.float64, device=module.device)


@torch.no_grad()
def _stream_gram(module: UnlearningModule) -> tuple[torch.Tensor, torch.dtype]:
    """The Gram matrix of ``[f, 1]`` over the whole training set, one batch at a time, summed
    over processes, and the dtype the features came in."""
    total = _zero_gram(module)
    feature_dtype = torch.float32
    for features, _ in module.train_feature_batches():
        accumulate_gram(total, with_constant(features))
        feature_dtype = features.dtype
    return module.trainer.strategy.reduce(total, reduce_op="sum"), feature_dtype


def _gram_of(module: UnlearningModule, indices: torch.Tensor) -> torch.Tensor:
    if len(indices) == 0:
        return _zero_gram(module)
    return augmented_gram(module.train_features(indices)["features"])


@intra_op_threads(HEAD_THREADS)
def _operate(
    module: UnlearningModule,
    index: dict[str, Any],
    forget_gram: torch.Tensor,
    rcond: Rcond,
    surgery_bias: bool,
) -> tuple[float, int]:
    """Replace the head by its Naive PS result for the augmented ``forget_gram``; the cutoff
    and the rank of the pseudo-inverse it used."""
    model = module.model
    head = model.prototypes
    full_gram = index["gram"].to(module.device)
    dim = full_gram.shape[0] if surgery_bias else full_gram.shape[0] - 1
    rtol = cutoff_rtol(rcond, dim, index["feature_dtype"].dtype)
    new_weight, new_bias, rank = naive_head_surgery(
        (head.weight, head.bias),
        (model.initial_prototypes, model.initial_bias),
        full_gram,
        forget_gram,
        rtol,
        with_bias=surgery_bias,
    )
    if not (torch.isfinite(new_weight).all() and torch.isfinite(new_bias).all()):
        raise ValueError(
            f"the surgery on '{module.original_ckpt}' produced non-finite prototypes; "
            "nothing was written. Check the original checkpoint and its features."
        )
    head.weight.data.copy_(new_weight)
    head.bias.data.copy_(new_bias)
    return rtol, rank


def _write_cumulative_manifest(module: UnlearningModule, removed: list[int]) -> dict[str, Any]:
    """The result's split manifest lists every sample removed so far; written as its run's
    split.json (by global rank 0), and returned for its checkpoint."""
    assert module.datamodule.manifest is not None
    manifest = cumulative_manifest(module.datamodule.manifest, removed)
    trainer = module.trainer
    log_dir = trainer.log_dir  # a broadcast: every rank must ask, not only rank 0
    if trainer.is_global_zero and log_dir:
        write_manifest(Path(log_dir) / MANIFEST_NAME, manifest)
    return manifest
