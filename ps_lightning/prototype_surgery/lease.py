"""The surgery ledger's lease: one host at a time on a ledger in a folder several hosts share.

The ledger's ``flock`` serialises the processes of one machine; whether it reaches the other
machines that mount the same folder depends on the file system and its mount options, so the
ledger does not count on it. Beside the ledger, ``<checkpoint>.surgery-ledger.lease`` names
the host, process and time of the transaction that holds it. It is created exclusively
(``O_CREAT | O_EXCL``: one creator wins, also on NFS v3 and later) by a process that already
holds its own machine's ``flock``, and removed by that process when its transaction ends.

A process of another host that finds a lease waits for it to go (up to
``PS_LIGHTNING_LEDGER_WAIT`` seconds, 60 by default), then refuses in one line naming the
holder and what to do. A lease of this host, found while holding this host's ``flock``, was
left by a process that died inside a transaction, and is taken over. No lease of another host
is ever removed here: only a person can know that its process no longer runs. Behind the lease,
the ledger's seal is the commit check (`ps_lightning.prototype_surgery.ledger`), so that a lease
deleted while its holder still ran cannot let a write based on a stale read through.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HOST_ENV = "PS_LIGHTNING_HOST"
WAIT_ENV = "PS_LIGHTNING_LEDGER_WAIT"
DEFAULT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


class LedgerBusy(OSError):
    """Another host holds the ledger (or its lease cannot be read); the message says which and
    what to do."""


def host_name() -> str:
    """This machine's name in a lease: ``PS_LIGHTNING_HOST`` where set (machines that share a
    host name, such as containers started from one image), else the system's host name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def lease_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".surgery-ledger.lease")


def wait_seconds() -> float:
    """How long to wait for another host's lease (``PS_LIGHTNING_LEDGER_WAIT``)."""
    text = os.environ.get(WAIT_ENV)
    if text is None:
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(
            f"{WAIT_ENV}={text!r}: give the seconds to wait for another host's lease on a "
            "surgery ledger as a number >= 0 (unset: 60)."
        )
    return seconds


def _read_holder(path: Path) -> dict[str, Any] | None:
    """The lease's holder; ``None`` if it cannot be read (gone, or being written this instant:
    its creator writes it right after creating it)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("host"), str) else None


def _busy_message(
    checkpoint: Path, path: Path, holder: dict[str, Any] | None, waited: float
) -> str:
    if holder is None:
        return (
            f"the surgery ledger of '{checkpoint}' has a lease that cannot be read (waited "
            f"{waited:.0f} s): if no ps-lightning request against this original runs on any "
            f"host, delete '{path}' and run this request again."
        )
    host = holder["host"]
    return (
        f"the surgery ledger of '{checkpoint}' is held by host '{host}' (pid "
        f"{holder.get('pid')}, since {holder.get('since')}; waited {waited:.0f} s): run the "
        "cumulative requests against one original from one host, or run this one again when "
        f"that request has finished ({WAIT_ENV}=SECONDS waits longer); if no ps-lightning "
        f"request runs on '{host}' any more, delete '{path}' and run again."
    )


def _create(path: Path, holder: dict[str, Any]) -> bool:
    """Create the lease naming ``holder``; ``False`` if a lease exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(holder, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        # An empty lease would hold the ledger for every host until someone deletes it.
        path.unlink(missing_ok=True)
        raise
    return True


def acquire(checkpoint: Path) -> dict[str, Any]:
    """Take the lease of ``checkpoint``'s ledger, waiting for another host's to go; the caller
    holds this host's ``flock`` on the ledger. Returns the lease's content (to release it)."""
    path = lease_path(checkpoint)
    mine = {
        "host": host_name(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }
    patience = wait_seconds()
    started = time.monotonic()
    told = False
    while not _create(path, mine):
        holder = _read_holder(path)
        if holder is not None and holder["host"] == mine["host"]:
            # This process holds this host's flock, which every holder of a lease of this host
            # held while it ran: that holder is gone, killed inside its transaction.
            path.unlink(missing_ok=True)
            continue
        waited = time.monotonic() - started
        if waited >= patience:
            raise LedgerBusy(_busy_message(checkpoint, path, holder, waited))
        if not told and holder is not None:
            print(
                f"ps-lightning: the surgery ledger of '{checkpoint}' is held by host "
                f"'{holder['host']}' (pid {holder.get('pid')}); waiting up to {patience:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(POLL_SECONDS)
    return mine


def release(checkpoint: Path, mine: dict[str, Any]) -> None:
    """Remove the lease if it is still ``mine``: one deleted by hand and taken by another host
    meanwhile is that host's."""
    path = lease_path(checkpoint)
    holder = _read_holder(path)
    if holder is not None and holder.get("token") == mine["token"]:
        path.unlink(missing_ok=True)
