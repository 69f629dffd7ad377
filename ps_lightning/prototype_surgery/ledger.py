"""The surgery ledger: what Naive PS needs from the whole training set, and every sample that
cumulative requests have removed from one original model.

Beside (never inside) the original checkpoint ``<checkpoint>``:

- ``<checkpoint>.surgery-index.pt``: the caller's tensors (opaque here: the Gram matrices the
  surgery needs) and the bookkeeping: the model-content hash, every cumulative request, and a
  seal, a hash over all of it.
- ``<checkpoint>.surgery-ledger.json``: the same requests in plain JSON, written after the
  index. It is the witness of history: when the index is lost or damaged while this record
  lists requests, reading the ledger is an error, never a silent empty rebuild.
- ``<checkpoint>.surgery-ledger.lock``: every read-modify-write holds an exclusive ``flock`` on
  it, so concurrent requests of one machine serialise and the last one removes the union of all.
- ``<checkpoint>.surgery-ledger.lease``: while a read-modify-write runs, the host and process
  that hold the ledger, for the hosts that share its folder (`lease`): a request of another host
  waits for it, then refuses in one line. Before writing, a transaction checks that the stored
  seal is still the one it read, so that no write based on a stale read goes through.

An index is used only when its seal matches its content and its model hash matches the content
of the checkpoint in use (the head's ``W, b, W0, b0`` and the training-set fingerprint).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ps_lightning.data.requests import ids_sha256
from ps_lightning.files import atomic_torch_save, atomic_write_json
from ps_lightning.models.classifier import ImageClassifier
from ps_lightning.prototype_surgery.lease import LedgerBusy, acquire, release

INDEX_FORMAT = 2
BOOKKEEPING = ("format", "model_hash", "requests", "removed_indices", "seal")


class LedgerError(ValueError):
    """The ledger cannot be trusted; its message says what was lost and how to rebuild."""


def index_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".surgery-index.pt")


def record_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".surgery-ledger.json")


def lock_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".surgery-ledger.lock")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _update_with_tensor(digest: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tuple(tensor.shape)}:{tensor.dtype}:".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def model_content_hash(head_tensors: Sequence[torch.Tensor], train_fingerprint: str) -> str:
    """Identifies what an index is computed from: the head's tensors (``W, b, W0, b0``) and the
    training set (fingerprint), by content, so that no copied field can pass for them."""
    digest = hashlib.sha256(train_fingerprint.encode())
    for tensor in head_tensors:
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def classifier_content_hash(model: ImageClassifier, train_fingerprint: str) -> str:
    """``model_content_hash`` of a classifier's head: what its surgery index depends on."""
    head = model.prototypes
    return model_content_hash(
        (head.weight, head.bias, model.initial_prototypes, model.initial_bias), train_fingerprint
    )


def _seal(tensors: dict[str, torch.Tensor], bookkeeping: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(bookkeeping, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        _update_with_tensor(digest, tensors[name])
    return digest.hexdigest()


def union_of(requests: Sequence[dict[str, Any]]) -> list[int]:
    return sorted({int(i) for request in requests for i in request["ids"]})


@dataclass
class LedgerState:
    """What a transaction reads and may change: ``tensors`` (``None``: no index yet) and the
    recorded cumulative requests."""

    tensors: dict[str, torch.Tensor] | None
    requests: list[dict[str, Any]] = field(default_factory=list)
    changed: bool = False
    # The seal of the stored index this state was read from (``None``: none usable); the
    # commit check compares it with the stored one.
    seal: str | None = None

    @property
    def removed_indices(self) -> list[int]:
        return union_of(self.requests)

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        reserved = sorted(set(tensors) & set(BOOKKEEPING))
        if reserved:
            raise ValueError(f"tensor names {reserved} are reserved for the ledger's bookkeeping")
        self.tensors = {name: tensor.detach().cpu() for name, tensor in tensors.items()}
        self.changed = True

    def record_request(
        self, ids: Sequence[int], method: str, result_checkpoint: str | None
    ) -> None:
        """Record a cumulative request; ``result_checkpoint``: where its result was saved
        (``None``: kept in memory alone, by the Python API without ``save_to``)."""
        ids = sorted(int(i) for i in ids)
        digest = ids_sha256(ids)
        if result_checkpoint is not None and any(
            r["ids_sha256"] == digest and r["result_checkpoint"] == result_checkpoint
            for r in self.requests
        ):
            return  # the same run resumed after its commit (its result was not yet saved)
        already = set(self.removed_indices)
        self.requests.append(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "method": method,
                "result_checkpoint": result_checkpoint,
                "ids": ids,
                "ids_sha256": digest,
                "newly_removed": len([i for i in ids if i not in already]),
            }
        )
        self.changed = True


class Ledger:
    """The surgery ledger of one original checkpoint whose content hashes to ``model_hash``."""

    def __init__(self, checkpoint: str | Path, model_hash: str) -> None:
        self.checkpoint = Path(checkpoint)
        self.model_hash = model_hash
        self.index_file = index_path(checkpoint)
        self.record_file = record_path(checkpoint)

    @contextmanager
    def transaction(self, must_record: bool = True) -> Iterator[LedgerState]:
        """Hold the ledger's lock, read it, let the caller change it, and write it back if
        changed (the index, then the record). An exception inside writes nothing.

        ``must_record``: failing to lock or write is an error (cumulative requests); else the
        index is only a cache and such a failure is a warning, the ledger read but not written.
        """
        lock = lock_path(self.checkpoint)
        try:
            handle = open(lock, "a+")  # noqa: SIM115 (closed by the with below)
        except OSError as error:
            if must_record:
                raise OSError(f"cannot lock {self._unrecordable(error)}") from error
            warnings.warn(f"surgery index not cached: {error}", stacklevel=3)
            yield self.read()
            return
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                with self._lease(must_record) as leased:
                    state = self.read()
                    yield state
                    if state.changed and leased:
                        self._commit(state, must_record)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def _lease(self, must_record: bool) -> Iterator[bool]:
        """This host's lease on the ledger, for the hosts that share its folder: whether it
        is held (with ``must_record`` false a ledger held elsewhere is read, not written)."""
        try:
            mine = acquire(self.checkpoint)
        except LedgerBusy as busy:
            if must_record:
                raise
            warnings.warn(f"surgery index not cached: {busy}", stacklevel=4)
            yield False
            return
        except OSError as error:
            if must_record:
                raise OSError(f"cannot lock {self._unrecordable(error)}") from error
            warnings.warn(f"surgery index not cached: {error}", stacklevel=4)
            yield False
            return
        try:
            yield True
        finally:
            release(self.checkpoint, mine)

    def _commit(self, state: LedgerState, must_record: bool) -> None:
        """Write ``state`` if the stored index is still the one it was read from."""
        stored = self._stored_index()
        if (stored["seal"] if isinstance(stored, dict) else None) != state.seal:
            if not must_record:
                warnings.warn("surgery index not cached: it changed meanwhile", stacklevel=4)
                return
            raise LedgerError(
                f"the surgery ledger '{self.index_file}' changed while this request ran (written "
                "by a process that held neither its lock nor its lease, e.g. on another host "
                "after the lease was deleted), so this request, based on what it read before, "
                "was not recorded and nothing was written: run it again."
            )
        try:
            self._write(state)
        except OSError as error:
            if must_record:
                raise OSError(f"cannot write {self._unrecordable(error)}") from error
            warnings.warn(
                f"surgery index not cached ({error}); the next request rebuilds it.",
                stacklevel=4,
            )

    def _unrecordable(self, error: OSError) -> str:
        return (
            f"the surgery ledger of '{self.checkpoint}' ({error}); later cumulative requests "
            "would not know these samples were removed, so this one is refused. Make the "
            "checkpoint's folder writable (and free space), or drop cumulative."
        )

    def read(self) -> LedgerState:
        """The ledger's state; an error, naming what was lost, if history cannot be trusted."""
        recorded = self._recorded_requests()
        stored = self._stored_index()
        if isinstance(stored, dict):
            if len(stored["requests"]) >= len(recorded):
                tensors = {k: v for k, v in stored.items() if k not in BOOKKEEPING}
                return LedgerState(tensors, list(stored["requests"]), seal=stored["seal"])
            problem = (
                f"it holds {len(stored['requests'])} requests but '{self.record_file.name}' "
                f"lists {len(recorded)} (an older copy was put back)"
            )
        else:
            problem = stored or "it is missing"
        if not recorded:
            return LedgerState(None)  # no request recorded: an index is only a cache
        raise LedgerError(self._lost_history_message(problem, recorded))

    def _lost_history_message(self, problem: str, history: list[dict[str, Any]]) -> str:
        removed = union_of(history)
        return (
            f"the surgery ledger '{self.index_file}' cannot be used: {problem}. It recorded "
            f"{len(history)} cumulative requests removing {len(removed)} samples (listed in "
            f"'{self.record_file}'); rebuilding it empty would silently bring them back into "
            "later results. To rebuild it: move the index and that record aside, write the "
            f"union of the recorded ids with `python -m ps_lightning.prototype_surgery.ledger "
            f"'{self.record_file}' > removed.json`, and run one cumulative request with "
            "data.forget indices and data.forget_indices_file removed.json."
        )

    def _recorded_requests(self) -> list[dict[str, Any]]:
        if not self.record_file.is_file():
            return []
        try:
            record = json.loads(self.record_file.read_text())
            requests = record["requests"]
            if not isinstance(requests, list):
                raise TypeError
            return requests
        except (ValueError, KeyError, TypeError) as error:
            raise LedgerError(
                f"the surgery ledger record '{self.record_file}' is damaged ({error!r}), so it "
                "is unknown which samples earlier cumulative requests removed. Restore it from "
                "a backup; the latest cumulative result checkpoint lists the union removed so "
                "far in its split manifest (ps_lightning.data.split_manifest.forget_indices)."
            ) from error

    def _stored_index(self) -> dict[str, Any] | str | None:
        """The stored index, ``None`` if there is none, or why it cannot be used."""
        if not self.index_file.is_file():
            return None
        try:
            index = torch.load(self.index_file, map_location="cpu", weights_only=True)
        except Exception as error:
            return f"it cannot be read ({type(error).__name__})"
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            return f"it is not a ledger of format {INDEX_FORMAT}"
        bookkeeping = {k: index.get(k) for k in ("format", "model_hash", "requests")}
        tensors = {k: v for k, v in index.items() if k not in BOOKKEEPING}
        if not isinstance(index.get("requests"), list) or index.get("seal") != _seal(
            tensors, bookkeeping
        ):
            return "its content does not match its seal (edited or damaged)"
        if index["model_hash"] != self.model_hash:
            return (
                "it was computed for another model or training set (its model hash differs "
                "from the hash of this checkpoint's head and training-set fingerprint)"
            )
        return index

    def _write(self, state: LedgerState) -> None:
        if state.tensors is None:
            raise ValueError("a ledger is written with its tensors; set_tensors first")
        bookkeeping = {
            "format": INDEX_FORMAT,
            "model_hash": self.model_hash,
            "requests": state.requests,
        }
        index = {
            **state.tensors,
            **bookkeeping,
            "removed_indices": state.removed_indices,
            "seal": _seal(state.tensors, bookkeeping),
        }
        atomic_torch_save(self.index_file, index)
        atomic_write_json(
            self.record_file,
            {
                "original_checkpoint": str(self.checkpoint),
                "model_hash": self.model_hash,
                "requests": state.requests,
                "removed_indices": state.removed_indices,
            },
        )


def main(argv: list[str]) -> None:
    """Print the union of the ids a ledger record lists (to rebuild a lost index)."""
    if len(argv) != 1:
        sys.exit(
            "usage: python -m ps_lightning.prototype_surgery.ledger "
            "<checkpoint>.surgery-ledger.json"
        )
    requests = json.loads(Path(argv[0]).read_text())["requests"]
    print(json.dumps(union_of(requests)))


if __name__ == "__main__":
    main(sys.argv[1:])
