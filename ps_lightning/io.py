"""File writing that never leaves a half-written file, and loading that never unpickles."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` atomically, with the usual permissions."""
    # A temporary file in the target folder, then os.replace: readers see the old file or the
    # whole new one, never a torn write, even when the process is killed mid-way.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions an ordinary write would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Load a torch file with ``weights_only=True``: tensors and primitives, no code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: '{path}'. Check the path, or train it first "
            "(e.g. `ps-lightning fit --config configs/<dataset>/original.yaml`)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{what} '{path}' could not be read as a ps-lightning file ({error}). It may be "
            "truncated, or not written by this tool; only files holding tensors and plain "
            "values are loaded."
        ) from error
