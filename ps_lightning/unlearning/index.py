"""The surgery index: what Naive PS needs from the whole training set, computed once per model.

Stored beside (never inside) the original checkpoint as ``<checkpoint>.surgery-index.pt``:
``G = FᵀF`` over all training samples, the projection ``(W − W0)·G⁺``, and, for cumulative
requests, the Gram matrix ``G_f`` and indices of every sample removed so far. It records the
checkpoint's hash and the training set's fingerprint; an index that does not match both is
rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ps_lightning.io import atomic_torch_save

INDEX_FORMAT = 1


def index_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".surgery-index.pt")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_index(
    checkpoint_sha: str, train_fingerprint: str, gram: torch.Tensor, projection: torch.Tensor
) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "checkpoint_sha256": checkpoint_sha,
        "train_fingerprint": train_fingerprint,
        "gram": gram.cpu(),
        "projection": projection.cpu(),
        "removed_gram": torch.zeros_like(gram).cpu(),
        "removed_indices": [],
    }


def load_index(
    path: str | Path, checkpoint_sha: str, train_fingerprint: str
) -> dict[str, Any] | None:
    """The index at ``path`` if it belongs to this checkpoint and training set, else ``None``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        index = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # truncated or foreign: rebuilt by the caller
    if (
        not isinstance(index, dict)
        or index.get("format") != INDEX_FORMAT
        or index.get("checkpoint_sha256") != checkpoint_sha
        or index.get("train_fingerprint") != train_fingerprint
    ):
        return None
    return index


def save_index(path: str | Path, index: dict[str, Any]) -> None:
    atomic_torch_save(path, index)
