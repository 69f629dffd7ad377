"""File writing that never leaves a half-written file, and loading that never unpickles."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

# errno values that mean "the device cannot take this file" (EFBIG: a file-size limit).
OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

# The errors of this machine's disk rather than of the program or the network: a full device,
# a file-size limit, a quota, a file or folder without permission, a read-only mount.
MACHINE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path, pid: int) -> str:
    return f".{path.name}.{pid}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by writers that no longer run (killed mid-write).

    A temporary's name carries its writer's pid, so a live writer's file is never touched.
    """
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        pid_text = candidate.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` atomically, with the usual permissions.

    ``write`` fills a memory buffer first, so that a full disk is reported as such by the one
    file write (torch's serializer would report it as ``unexpected pos``).
    """
    # A temporary file in the target folder, then os.replace: readers see the old file or the
    # whole new one, never a torn write, even when the process is killed mid-way.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    buffer = io.BytesIO()
    write(buffer)
    fd, tmp = tempfile.mkstemp(
        prefix=_temp_prefix(path, os.getpid()), suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions an ordinary write would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
            raise OSError(
                error.errno,
                f"no room to write '{path}' ({buffer.getbuffer().nbytes:,} bytes): "
                f"{os.strerror(error.errno or 0)}. Free space on that device (or lift the "
                "file-size limit), or write the run elsewhere (trainer.logger save_dir); "
                "nothing was overwritten.",
            ) from error
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
