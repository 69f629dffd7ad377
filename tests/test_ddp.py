"""Two CPU processes (gloo, ddp_fork) give the statistics of one process: every sample counted
once in the Gram matrix, the same Naive PS prototypes, the same evaluation numbers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from unlearning_fixtures import (
    Original,
    fc_weight,
    naive_in_child,
    naive_reference,
    original,
    retrain_ckpt,
    run_cli,
    unlearn,
    unlearning_record,
)

from ps_lightning.distributed import gather_rows
from ps_lightning.prototype_surgery.ledger import index_path

__all__ = ["naive_reference", "original", "retrain_ckpt"]  # fixtures used below


class _Rank:
    """One process of a simulated world: ``all_gather`` returns every rank's (padded) tensor."""

    def __init__(self, shards: list[torch.Tensor], rank: int) -> None:
        self.shards, self.rank = shards, rank
        self.trainer = SimpleNamespace(world_size=len(shards))

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype == torch.long and tensor.shape == (1,):  # the shard lengths
            return torch.stack([torch.tensor([len(s)]) for s in self.shards])
        padded = []
        for shard in self.shards:
            block = torch.zeros_like(tensor)
            block[: len(shard)] = shard
            padded.append(block)
        return torch.stack(padded)


def test_gathered_rows_come_back_in_dataset_order() -> None:
    dataset = torch.arange(7 * 3, dtype=torch.float64).view(7, 3)
    world_size = 3
    # UnrepeatedDistributedSampler without shuffling: rank r holds rows r, r + W, ...
    shards = [dataset[rank::world_size] for rank in range(world_size)]

    for rank in range(world_size):
        assert torch.equal(gather_rows(_Rank(shards, rank), shards[rank]), dataset)


def test_gather_rows_is_the_identity_on_one_process() -> None:
    rows = torch.randn(5, 2)
    assert gather_rows(_Rank([rows], 0), rows) is rows


TWO_PROCESSES = (
    "--trainer.strategy",
    "ddp_fork",
    "--trainer.devices",
    "2",
    "--trainer.accelerator",
    "cpu",
)


def test_naive_surgery_on_two_processes_equals_one_process(
    original: Original, naive_reference: Path, tmp_path: Path
) -> None:
    # A fresh copy of the original: its own index, built by the two processes.
    ckpt = original.copy_to(tmp_path / "original")

    result = unlearn(
        tmp_path / "runs", "naive", ckpt, *TWO_PROCESSES, manifest=original.manifest, in_child=True
    )

    single_index = torch.load(
        index_path(unlearning_record(naive_reference)["original_ckpt"]), weights_only=True
    )
    ddp_index = torch.load(index_path(ckpt), weights_only=True)
    assert unlearning_record(result)["index_built"] is True
    scale = single_index["gram"].abs().max()
    # Padded (repeated) samples would add whole rows to G: far beyond this tolerance.
    torch.testing.assert_close(
        ddp_index["gram"], single_index["gram"], rtol=1e-10, atol=1e-12 * scale
    )
    torch.testing.assert_close(fc_weight(result), fc_weight(naive_reference), rtol=1e-6, atol=1e-6)
    assert unlearning_record(result)["removed_samples"] == 15


@pytest.fixture()
def evaluations(
    original: Original, retrain_ckpt: Path, naive_reference: Path, tmp_path: Path
) -> dict[str, dict]:
    checkpoints = json.dumps(
        {
            "original": str(original.ckpt),
            "retrain": str(retrain_ckpt),
            "naive": str(naive_reference),
        }
    )
    results = {}
    for name, extra in (("one", ()), ("two", TWO_PROCESSES)):
        run_dir = run_cli(
            "test",
            "evaluate.yaml",
            tmp_path / name,
            "evaluate",
            "--model.init_args.checkpoints",
            checkpoints,
            "--data.init_args.split_manifest",
            str(original.manifest),
            *extra,
            in_child=bool(extra),
        )
        results[name] = json.loads((run_dir / "metrics.json").read_text())
    return results


def test_evaluation_on_two_processes_reports_the_numbers_of_one(evaluations: dict) -> None:
    one, two = evaluations["one"], evaluations["two"]
    assert one["models"].keys() == two["models"].keys()
    for name in one["models"]:
        expected, got = one["models"][name], two["models"][name]
        for part in ("metrics", "gap_to_retrain"):
            assert got[part].keys() == expected[part].keys()
            for metric, value in expected[part].items():
                assert got[part][metric] == pytest.approx(value, abs=1e-6), (name, metric)


def test_a_cumulative_run_launched_on_two_processes_ends_with_one_summary(
    original: Original, tmp_path: Path
) -> None:
    # `ddp` re-runs the command once per process (the GPU strategy); `ddp_fork` above returns
    # to one process before the run ends, so only this launch shows that every rank reaches the
    # end: each must ask for the run folder (a broadcast) where rank 0 alone writes there (the
    # ledger's record and split.json of a cumulative request, the summary).
    output, run_dir = naive_in_child(
        original.copy_to(tmp_path / "original"),
        original.manifest,
        tmp_path,
        "--model.init_args.cumulative",
        "true",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        timeout=180,
    )
    assert output.count("ps-lightning fit: done in") == 1
    manifest = json.loads((run_dir / "split.json").read_text())
    assert manifest["request"]["kind"] == "cumulative"
