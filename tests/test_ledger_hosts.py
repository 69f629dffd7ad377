"""The surgery ledger on a folder several hosts share: a request of a second host waits for the
first one's lease and then removes the union, or is refused in one line naming the holder; a
lease left by a dead process of this host is taken over, another host's never removed; a write
based on a stale read is refused by the seal.

A "host" here is a process presenting a host name (``PS_LIGHTNING_HOST``) and its own
``flock`` (the lock file suffixed with the host name): machines whose locks do not reach each
other, the case the lease is for. Run as a script, this file is one such host's request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ps_lightning.prototype_surgery import ledger as ledger_module
from ps_lightning.prototype_surgery.lease import (
    HOST_ENV,
    WAIT_ENV,
    LedgerBusy,
    host_name,
    lease_path,
    wait_seconds,
)
from ps_lightning.prototype_surgery.ledger import Ledger, LedgerError, index_path, record_path

MODEL_HASH = "a" * 64
FEATURES = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)).double()
# Within the per-test limit (pyproject.toml): a hung host fails the test with its output.
HOST_TIMEOUT = 90


def gram_of(ids: list[int]) -> torch.Tensor:
    rows = FEATURES[sorted(ids)]
    return rows.T @ rows


def cumulative_request(checkpoint: Path, ids: list[int], name: str, hold: Path | None) -> None:
    """What a cumulative Naive PS request does to the ledger; with ``hold``, it writes
    ``<hold>.inside`` once it holds the ledger and goes on when ``hold`` exists."""
    with Ledger(checkpoint, MODEL_HASH).transaction() as state:
        if hold is not None:
            hold.with_suffix(".inside").touch()
            deadline = time.monotonic() + HOST_TIMEOUT
            while not hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        tensors = state.tensors or {"removed_gram": torch.zeros(5, 5, dtype=torch.float64)}
        new = [i for i in ids if i not in set(state.removed_indices)]
        state.set_tensors({"removed_gram": tensors["removed_gram"] + gram_of(new)})
        state.record_request(ids, "naive", name)


def host_env(host: str, wait: float) -> dict[str, str]:
    return {**os.environ, HOST_ENV: host, WAIT_ENV: str(wait), "OMP_NUM_THREADS": "1"}


def start_host(
    host: str, checkpoint: Path, ids: list[int], hold: Path | None = None, wait: float = 0
) -> subprocess.Popen:
    """A request of ``host`` in a process of its own (started, never forked from pytest)."""
    args = [str(checkpoint), json.dumps(ids), host, str(hold or "")]
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        env=host_env(host, wait),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(host: subprocess.Popen) -> tuple[int, str]:
    """The exit status of a host's request and what it wrote to stderr."""
    try:
        _, err = host.communicate(timeout=HOST_TIMEOUT)
    except subprocess.TimeoutExpired:
        host.kill()
        _, err = host.communicate()
        pytest.fail(f"a host's request hung:\n{err[-3000:]}")
    return host.returncode, err


def wait_for(path: Path, host: subprocess.Popen) -> None:
    deadline = time.monotonic() + HOST_TIMEOUT
    while not path.exists():
        assert host.poll() is None, f"the host ended early:\n{finish(host)[1][-3000:]}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.fixture()
def holder(tmp_path: Path):
    """host-a's request on ``tmp_path/model.ckpt`` (ids 1-3), stopped while it holds the
    ledger; ``release()`` lets it finish and returns its exit status and stderr."""
    checkpoint, hold = tmp_path / "model.ckpt", tmp_path / "release"
    first = start_host("host-a", checkpoint, [1, 2, 3], hold)
    try:
        wait_for(hold.with_suffix(".inside"), first)

        def release() -> tuple[int, str]:
            hold.touch()
            return finish(first)

        yield checkpoint, first, release
    finally:
        hold.touch()
        if first.poll() is None:
            finish(first)


def test_a_second_host_is_refused_in_one_line_naming_the_holder(holder) -> None:
    checkpoint, first, release = holder

    code, stderr = finish(start_host("host-b", checkpoint, [3, 4], wait=0))

    assert code != 0
    message = last_line(stderr).split("LedgerBusy: ", 1)[1]
    assert f"held by host 'host-a' (pid {first.pid}," in message
    assert "from one host" in message and WAIT_ENV in message
    assert f"delete '{lease_path(checkpoint)}'" in message
    assert release()[0] == 0
    state = Ledger(checkpoint, MODEL_HASH).read()
    assert [r["result_checkpoint"] for r in state.requests] == ["host-a"]
    assert not lease_path(checkpoint).exists()
    # What the message says to do: run it again once that request has finished.
    assert finish(start_host("host-b", checkpoint, [3, 4]))[0] == 0
    assert Ledger(checkpoint, MODEL_HASH).read().removed_indices == [1, 2, 3, 4]


def test_a_second_host_waits_for_the_lease_and_both_requests_remove_the_union(holder) -> None:
    checkpoint, _, release = holder
    second = start_host("host-b", checkpoint, [3, 4], wait=HOST_TIMEOUT)
    # It says that it waits, and for whom: a waiting request does not look hung.
    line = second.stderr.readline()
    assert "held by host 'host-a'" in line and "waiting up to" in line

    assert release()[0] == 0
    assert finish(second)[0] == 0

    state = Ledger(checkpoint, MODEL_HASH).read()
    assert [r["result_checkpoint"] for r in state.requests] == ["host-a", "host-b"]
    assert state.removed_indices == [1, 2, 3, 4]
    # Serialised: host-b read host-a's result, so sample 3 counts once.
    torch.testing.assert_close(state.tensors["removed_gram"], gram_of([1, 2, 3, 4]))
    assert [r["newly_removed"] for r in state.requests] == [3, 1]
    assert not lease_path(checkpoint).exists()


def write_lease(checkpoint: Path, host: str, pid: int) -> bytes:
    lease = {"host": host, "pid": pid, "since": "2026-01-01T00:00:00+00:00", "token": "t"}
    lease_path(checkpoint).write_text(json.dumps(lease))
    return lease_path(checkpoint).read_bytes()


def test_a_lease_left_by_a_dead_process_of_this_host_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WAIT_ENV, "0")
    checkpoint = tmp_path / "model.ckpt"
    write_lease(checkpoint, host_name(), pid=2**22 + 1)  # killed inside its transaction

    cumulative_request(checkpoint, [5], "a", hold=None)

    assert Ledger(checkpoint, MODEL_HASH).read().removed_indices == [5]
    assert not lease_path(checkpoint).exists()


@pytest.mark.parametrize("content", ["host-b", ""], ids=["another-host", "unreadable"])
def test_a_lease_of_another_host_is_never_removed_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    monkeypatch.setenv(WAIT_ENV, "0")
    checkpoint = tmp_path / "model.ckpt"
    if content:
        kept = write_lease(checkpoint, content, pid=42)
    else:  # its creator is writing it, or was killed between creating and writing it
        lease_path(checkpoint).write_bytes(kept := b"")

    with pytest.raises(LedgerBusy) as refused:
        cumulative_request(checkpoint, [5], "a", hold=None)

    message = str(refused.value)
    assert "\n" not in message and f"delete '{lease_path(checkpoint)}'" in message
    assert ("held by host 'host-b' (pid 42" in message) == bool(content)
    assert lease_path(checkpoint).read_bytes() == kept
    assert not index_path(checkpoint).exists() and not record_path(checkpoint).exists()


def test_an_index_cache_held_by_another_host_is_read_and_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WAIT_ENV, "0")
    checkpoint = tmp_path / "model.ckpt"
    kept = write_lease(checkpoint, "host-b", pid=42)
    with (
        pytest.warns(UserWarning, match="not cached: .*held by host 'host-b'"),
        Ledger(checkpoint, MODEL_HASH).transaction(must_record=False) as state,
    ):
        state.set_tensors({"gram": torch.eye(2)})
    assert not index_path(checkpoint).exists()
    assert lease_path(checkpoint).read_bytes() == kept


def test_a_write_based_on_a_stale_read_is_refused_by_the_seal(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(checkpoint, [1], "a", hold=None)
    with (
        pytest.raises(LedgerError, match="changed while this request ran"),
        Ledger(checkpoint, MODEL_HASH).transaction() as state,
    ):
        # Meanwhile a process that holds neither the lock nor the lease (another host, after
        # its lease was deleted by hand) records a request.
        other = Ledger(checkpoint, MODEL_HASH)
        interloper = other.read()
        interloper.record_request([7], "naive", "b")
        other._write(interloper)
        state.record_request([2], "naive", "c")
    written = Ledger(checkpoint, MODEL_HASH).read()
    assert [r["result_checkpoint"] for r in written.requests] == ["a", "b"]  # b's kept, c not


def test_a_lease_taken_by_another_host_meanwhile_is_left_to_it(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    with Ledger(checkpoint, MODEL_HASH).transaction() as state:
        # This request's lease deleted by hand, and another host's created since.
        lease_path(checkpoint).unlink()
        kept = write_lease(checkpoint, "host-b", pid=42)
        state.set_tensors({"removed_gram": gram_of([1])})
        state.record_request([1], "naive", "a")
    assert lease_path(checkpoint).read_bytes() == kept
    assert Ledger(checkpoint, MODEL_HASH).read().removed_indices == [1]


def test_the_host_name_and_the_wait_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HOST_ENV, "node-17")
    monkeypatch.setenv(WAIT_ENV, "2.5")
    assert (host_name(), wait_seconds()) == ("node-17", 2.5)
    monkeypatch.delenv(HOST_ENV)
    monkeypatch.delenv(WAIT_ENV)
    assert host_name() == os.uname().nodename and wait_seconds() == 60
    monkeypatch.setenv(WAIT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{WAIT_ENV}='soon': give the seconds"):
        wait_seconds()


if __name__ == "__main__":
    # One host's request: its own flock (a lock file of its host name), as on a machine whose
    # locks the other hosts do not see.
    machine_lock = ledger_module.lock_path
    ledger_module.lock_path = lambda checkpoint: Path(f"{machine_lock(checkpoint)}.{host_name()}")
    checkpoint_arg, ids_arg, name_arg, hold_arg = sys.argv[1:]
    cumulative_request(
        Path(checkpoint_arg), json.loads(ids_arg), name_arg, Path(hold_arg) if hold_arg else None
    )
