"""A job of two nodes, one process each, launched as on a cluster: torchrun with one agent per
node rank (here both on this host, gloo on the CPU), each running `ps-lightning fit` with
``--trainer.num_nodes 2 --trainer.devices 1 --trainer.strategy ddp``. This is Lightning's own
multi-node path (its TorchElasticEnvironment: ranks, node rank and rendezvous from the
launcher), which the one-host tests of test_ddp.py (ddp_fork, ddp launching its own processes)
never take. Each step must end where one host ends: the training with the model that two
processes on one host train, Naive PS with the Gram matrix and prototypes of one process, PS
with the prototypes of one process; every result lands in the one run folder both ranks were
given, written once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from unlearning_fixtures import (
    CONFIGS,
    QUIET,
    Original,
    fc_weight,
    load_checkpoint,
    naive_reference,
    original,
    ps_reference,
    result_checkpoint,
    run_cli,
    unlearning_record,
)

from ps_lightning.models.classifier import load_classifier
from ps_lightning.prototype_surgery.ledger import index_path
from ps_lightning.timing import TIMING_NAME

__all__ = ["naive_reference", "original", "ps_reference"]  # fixtures used below

BIN = Path(sys.executable).parent
NODES = 2
# Seconds for one two-node step (about 20 on this 2-core machine): a rank that never joins
# makes the other wait at the rendezvous for ever; past this both are killed and the test fails.
JOB_TIMEOUT = 150
# Variables that would make Lightning pick another cluster environment than torchrun's (SLURM
# comes first in its detection) or make a child join another job; PL_GLOBAL_SEED is left by
# the in-process runs of this session.
FOREIGN_ENV = (
    "SLURM_",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_",
    "PL_",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(node_rank: int, port: int, step: list[str]) -> list[str]:
    """What one node runs: torchrun's agent for ``node_rank``, which starts `ps-lightning`."""
    # `--` ends torchrun's options: without it torchrun's parser takes `--run` for an
    # abbreviation of its own `--run-path` and stops ("ambiguous option").
    return [
        str(BIN / "torchrun"),
        "--nnodes", str(NODES),
        "--nproc_per_node", "1",
        "--node_rank", str(node_rank),
        "--master_addr", "127.0.0.1",
        "--master_port", str(port),
        "--no-python",
        "--",
        str(BIN / "ps-lightning"),
        *step,
        "--trainer.num_nodes", str(NODES),
        "--trainer.devices", "1",
        "--trainer.accelerator", "cpu",
        "--trainer.strategy", "ddp",
    ]  # fmt: skip


def two_node_fit(config: str, save_dir: Path, run: str, *args: str) -> str:
    """``ps-lightning fit --config configs/digits/<config>`` as a job of two nodes; returns
    what both nodes printed (node 0 first). Fails the test if a node fails or hangs."""
    step = [
        "fit",
        "--config", str(CONFIGS / config),
        "--run", run,
        "--trainer.logger.init_args.save_dir", str(save_dir),
        *QUIET,
        *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores: no oversubscribed thread pools
    port = free_port()
    logs = [save_dir.parent / f"{run}-node{rank}.log" for rank in range(NODES)]
    nodes = []
    try:
        for rank, log in enumerate(logs):
            with open(log, "w") as output:
                nodes.append(
                    subprocess.Popen(
                        node_command(rank, port, step),
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        env=env,
                        # Its own process group: a hung agent is killed with its worker.
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + JOB_TIMEOUT
        codes = [node.wait(timeout=max(1.0, deadline - time.monotonic())) for node in nodes]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    output = "\n".join(f"--- node {r}\n{log.read_text()}" for r, log in enumerate(logs))
    assert codes == [0] * NODES, f"two-node job failed or hung ({codes}):\n{output[-6000:]}"
    return output


def run_files(run_dir: Path) -> list[str]:
    """The files of a run folder, TensorBoard's event file under one name (its name carries the
    host, pid and time)."""
    return sorted(
        "events" if path.name.startswith("events.out.tfevents") else str(path.relative_to(run_dir))
        for path in run_dir.rglob("*")
        if path.is_file()
    )


def assert_one_run_folder(save_dir: Path, run: str, output: str) -> Path:
    """Both ranks were given ``--run`` and the save dir: rank 0 names the folder for all
    (Lightning's ``Trainer.log_dir`` is its broadcast), and writes it alone, once."""
    run_dir = save_dir / "digits" / run
    assert sorted(save_dir.glob("*/*")) == [run_dir]
    assert output.count("ps-lightning fit: done in") == 1
    assert f"run folder  {run_dir}" in output
    assert load_checkpoint(result_checkpoint(run_dir))  # a whole file
    return run_dir


@pytest.mark.timeout(240)
def test_training_on_two_nodes_gives_the_model_of_two_processes_on_one_host(
    original: Original, tmp_path: Path
) -> None:
    epochs = ("--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1")
    output = two_node_fit("original.yaml", tmp_path / "nodes", "original", *epochs)
    run_dir = assert_one_run_folder(tmp_path / "nodes", "original", output)
    # One process shuffles and batches otherwise (no DistributedSampler): what is comparable is
    # the same world size on one host, two processes of ddp_fork.
    one_host = run_cli(
        "fit",
        "original.yaml",
        tmp_path / "host",
        "original",
        *epochs,
        "--trainer.strategy", "ddp_fork",
        "--trainer.devices", "2",
        "--trainer.accelerator", "cpu",
        in_child=True,
    )  # fmt: skip

    nodes_ckpt = load_checkpoint(result_checkpoint(run_dir))
    host_ckpt = load_checkpoint(result_checkpoint(one_host))
    assert nodes_ckpt["state_dict"].keys() == host_ckpt["state_dict"].keys()
    for name, tensor in host_ckpt["state_dict"].items():
        torch.testing.assert_close(nodes_ckpt["state_dict"][name], tensor, rtol=1e-6, atol=1e-7)
    model, record = load_classifier(str(result_checkpoint(run_dir)))
    assert record["complete"] is True and type(model).__name__ == "LeNet5"
    # The request a single process draws (the session's original): every later step reuses it.
    split = record["data"]["split_manifest"]
    assert split == load_checkpoint(original.ckpt)["ps_lightning"]["data"]["split_manifest"]
    assert run_files(run_dir) == run_files(one_host)
    assert '"world_size": 2' in (run_dir / TIMING_NAME).read_text()


@pytest.mark.timeout(240)
def test_naive_surgery_on_two_nodes_equals_one_process(
    original: Original, naive_reference: Path, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")  # its own index, built by the two nodes
    output = two_node_fit(
        "naive_ps.yaml",
        tmp_path / "runs",
        "naive",
        "--model.init_args.original_ckpt", str(ckpt),
        "--data.init_args.split_manifest", str(original.manifest),
    )  # fmt: skip
    run_dir = assert_one_run_folder(tmp_path / "runs", "naive", output)
    result = result_checkpoint(run_dir)

    assert unlearning_record(result)["index_built"] is True
    single = torch.load(
        index_path(unlearning_record(naive_reference)["original_ckpt"]), weights_only=True
    )
    nodes = torch.load(index_path(ckpt), weights_only=True)
    # The Gram all-reduce: each node's share once. A rank's share missing or counted twice
    # moves G by whole rows of features, far beyond this tolerance.
    scale = single["gram"].abs().max()
    torch.testing.assert_close(nodes["gram"], single["gram"], rtol=1e-10, atol=1e-12 * scale)
    torch.testing.assert_close(fc_weight(result), fc_weight(naive_reference), rtol=1e-6, atol=1e-6)
    assert unlearning_record(result)["removed_samples"] == 15
    assert run_files(run_dir) == run_files(naive_reference.parent.parent)


@pytest.mark.timeout(240)
def test_prototype_surgery_on_two_nodes_equals_one_process(
    original: Original, ps_reference: Path, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    output = two_node_fit(
        "ps.yaml",
        tmp_path / "runs",
        "ps",
        "--model.init_args.original_ckpt", str(ckpt),
        "--data.init_args.split_manifest", str(original.manifest),
        # The settings of ps_reference.
        "--model.init_args.epochs", "10",
        "--model.init_args.early_stop", "off",
    )  # fmt: skip
    run_dir = assert_one_run_folder(tmp_path / "runs", "ps", output)
    result = result_checkpoint(run_dir)

    # Every rank trains on every cached forget feature (one same-order loader), so DDP averages
    # identical gradients: one process's steps, up to the order of float sums.
    torch.testing.assert_close(fc_weight(result), fc_weight(ps_reference), rtol=1e-5, atol=1e-6)
    nodes_state = load_checkpoint(result)["state_dict"]
    single_state = load_checkpoint(ps_reference)["state_dict"]
    torch.testing.assert_close(nodes_state["net.fc.bias"], single_state["net.fc.bias"])
    assert unlearning_record(result)["removed_samples"] == 15
    assert run_files(run_dir) == run_files(ps_reference.parent.parent)
