"""The surgery index: what Naive PS needs from the whole training set, computed once per model.

Stored beside (never inside) the original checkpoint as ``<checkpoint>.surgery-index.pt``:
``gram``, the Gram matrix of the augmented features ``[f, 1]`` over all training samples
((d+1)×(d+1), float64; its top-left d×d block is ``G = FᵀF``), the dtype the features were
computed in (it sets the pseudo-inverse's noise floor), and, for cumulative requests,
``removed_gram`` (the same augmented Gram over every sample removed so far) and their indices.
No projection ``(W − W0)·G⁺`` is stored: it depends on the cutoff and on whether the bias takes
part, and costs one d×d eigendecomposition per request. It records the
checkpoint's hash and the training set's fingerprint; an index that does not match both is
rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ps_lightning.io import atomic_torch_save

INDEX_FORMAT = 2  # 2: augmented Gram matrices, no stored projection


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
    checkpoint_sha: str, train_fingerprint: str, gram: torch.Tensor, feature_dtype: torch.dtype
) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "checkpoint_sha256": checkpoint_sha,
        "train_fingerprint": train_fingerprint,
        "gram": gram.cpu(),
        "feature_dtype": str(feature_dtype).removeprefix("torch."),
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
