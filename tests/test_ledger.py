"""The surgery ledger alone: concurrent cumulative requests, lost or damaged history, seals."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from ps_lightning.prototype_surgery.ledger import (
    Ledger,
    LedgerError,
    index_path,
    lock_path,
    main,
    record_path,
)

MODEL_HASH = "a" * 64
NUM_SAMPLES = 64
# One feature row per training sample: the Gram of a request is a sum over its rows.
# Within the per-test limit (pyproject.toml): a hung worker fails the test with its reason.
WORKER_TIMEOUT = 90
FEATURES = torch.randn(NUM_SAMPLES, 5, generator=torch.Generator().manual_seed(0)).double()


def gram_of(ids: list[int]) -> torch.Tensor:
    rows = FEATURES[sorted(ids)]
    return rows.T @ rows


def cumulative_request(checkpoint: str, ids: list[int], name: str, start=None) -> None:
    """What a cumulative Naive PS request does to the ledger, with the feature pass of its new
    samples (the slow part, seconds on a real model) as a pause while the state is held."""
    if start is not None:
        start.wait()
    with Ledger(checkpoint, MODEL_HASH).transaction() as state:
        tensors = state.tensors or {
            "gram": FEATURES.T @ FEATURES,
            "removed_gram": torch.zeros(5, 5, dtype=torch.float64),
        }
        removed = set(state.removed_indices)
        new = [i for i in ids if i not in removed]
        time.sleep(0.2)
        state.set_tensors({**tensors, "removed_gram": tensors["removed_gram"] + gram_of(new)})
        state.record_request(ids, "naive", name)


def run_concurrently(checkpoint: Path, requests: list[list[int]]) -> None:
    # Never forked from the test process: a child of it inherits the locks that its other
    # threads (event writers, BLAS pools) held at that instant, and can wait on one for ever.
    # The fork server is a fresh single-threaded process that has imported this module once.
    # Daemons, terminated on the way out: a failure leaves no worker that keeps pytest waiting.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start = context.Barrier(len(requests))
    workers = [
        context.Process(
            target=cumulative_request, args=(str(checkpoint), ids, f"r{n}", start), daemon=True
        )
        for n, ids in enumerate(requests)
    ]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + WORKER_TIMEOUT
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            assert worker.exitcode == 0, f"worker exit code {worker.exitcode}"
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()


@pytest.mark.parametrize("num_requests", [2, 8])
def test_concurrent_cumulative_requests_end_with_the_union_removed(
    tmp_path: Path, num_requests: int
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    # Overlapping requests: each shares samples with the next.
    requests = [list(range(5 * n, 5 * n + 7)) for n in range(num_requests)]
    union = sorted({i for ids in requests for i in ids})

    run_concurrently(checkpoint, requests)

    state = Ledger(checkpoint, MODEL_HASH).read()
    assert state.removed_indices == union
    assert sorted(r["result_checkpoint"] for r in state.requests) == sorted(
        f"r{n}" for n in range(num_requests)
    )
    # Every sample's Gram counted once: the last writer removes the union, no more, no less.
    torch.testing.assert_close(state.tensors["removed_gram"], gram_of(union))
    assert sum(r["newly_removed"] for r in state.requests) == len(union)
    record = json.loads(record_path(checkpoint).read_text())
    assert record["removed_indices"] == union and len(record["requests"]) == num_requests


def test_a_request_records_ids_time_method_and_result(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [9, 3, 5], "runs/a/checkpoints/model.ckpt")
    cumulative_request(str(checkpoint), [5, 7], "runs/b/checkpoints/model.ckpt")
    requests = json.loads(record_path(checkpoint).read_text())["requests"]
    assert [r["ids"] for r in requests] == [[3, 5, 9], [5, 7]]
    assert [r["newly_removed"] for r in requests] == [3, 1]
    assert [r["method"] for r in requests] == ["naive", "naive"]
    assert requests[1]["result_checkpoint"] == "runs/b/checkpoints/model.ckpt"
    assert requests[0]["time"].endswith("+00:00")
    assert requests[0]["ids_sha256"] != requests[1]["ids_sha256"]


def test_an_exception_inside_a_transaction_writes_nothing(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1, 2], "a")
    before = index_path(checkpoint).read_bytes(), record_path(checkpoint).read_bytes()
    with (
        pytest.raises(RuntimeError, match="surgery failed"),
        Ledger(checkpoint, MODEL_HASH).transaction() as state,
    ):
        state.record_request([3], "naive", "b")
        raise RuntimeError("surgery failed")
    assert (index_path(checkpoint).read_bytes(), record_path(checkpoint).read_bytes()) == before


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _edit_a_tensor(path: Path) -> None:
    index = torch.load(path, weights_only=True)
    index["removed_gram"] = index["removed_gram"] * 0  # "forget" the removals, keep the seal
    torch.save(index, path)


def _copy_another_models_hash(path: Path) -> None:
    index = torch.load(path, weights_only=True)
    torch.save({**index, "model_hash": "b" * 64}, path)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_delete, "cannot be used: it is missing"),
        (_truncate, "it cannot be read"),
        (_edit_a_tensor, "does not match its seal"),
        (_copy_another_models_hash, "does not match its seal"),
    ],
    ids=["lost", "truncated", "edited", "foreign-hash"],
)
def test_a_lost_or_damaged_ledger_with_history_is_an_error_not_an_empty_rebuild(
    tmp_path: Path, spoil, problem: str
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1, 2, 3], "a")
    cumulative_request(str(checkpoint), [3, 4], "b")
    spoil(index_path(checkpoint))
    kept = record_path(checkpoint).read_bytes()

    with pytest.raises(LedgerError, match=problem) as refused:
        cumulative_request(str(checkpoint), [10], "c")

    message = str(refused.value)
    assert "2 cumulative requests removing 4 samples" in message
    assert str(record_path(checkpoint)) in message and "python -m ps_lightning" in message
    assert record_path(checkpoint).read_bytes() == kept  # the history is never overwritten


def test_the_index_of_another_model_with_history_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1, 2, 3], "a")
    with pytest.raises(LedgerError, match="computed for another model or training set"):
        Ledger(checkpoint, "b" * 64).read()


def test_an_older_copy_of_the_index_put_back_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1, 2], "a")
    older = index_path(checkpoint).read_bytes()
    cumulative_request(str(checkpoint), [7], "b")
    index_path(checkpoint).write_bytes(older)
    with pytest.raises(LedgerError, match=r"holds 1 requests but .* lists 2"):
        Ledger(checkpoint, MODEL_HASH).read()


def test_a_damaged_record_is_an_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1, 2], "a")
    record_path(checkpoint).write_text('{"requests": [')
    with pytest.raises(LedgerError, match=r"record .* is damaged"):
        Ledger(checkpoint, MODEL_HASH).read()


def test_a_damaged_index_without_history_is_only_a_cache_rebuilt(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    index_path(checkpoint).write_bytes(b"not a torch file")
    assert Ledger(checkpoint, MODEL_HASH).read().tensors is None
    other = tmp_path / "other.ckpt"
    with Ledger(other, MODEL_HASH).transaction() as state:
        state.set_tensors({"gram": torch.eye(2)})  # an index without requests
    assert Ledger(other, "b" * 64).read().tensors is None  # another model's: not used


def test_the_rebuild_command_prints_the_union_of_the_recorded_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [9, 3], "a")
    cumulative_request(str(checkpoint), [3, 4], "b")
    main([str(record_path(checkpoint))])  # python -m ps_lightning.prototype_surgery.ledger <record>
    assert json.loads(capsys.readouterr().out) == [3, 4, 9]


def test_the_lock_file_lies_beside_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    cumulative_request(str(checkpoint), [1], "a")
    assert lock_path(checkpoint).parent == checkpoint.parent and lock_path(checkpoint).exists()
