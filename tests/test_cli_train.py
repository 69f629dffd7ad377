"""The real `ps-lightning fit` path on digits: original run, retrain from its manifest, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, listing
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ps_lightning.steps import run_step

CONFIGS = REPO_ROOT / "configs" / "digits"
QUICK = [
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "3",
    "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


def fit(config: str, save_dir: Path, *extra: str) -> None:
    # The config path is absolute: its relative includes (train/*.yaml) resolve beside it.
    args = [
        "fit",
        "--config", str(CONFIGS / config),
        *QUICK,
        "--trainer.logger.init_args.save_dir", str(save_dir),
        *extra,
    ]  # fmt: skip
    run_step(args)


@pytest.fixture(scope="module")
def console_run(tmp_path_factory: pytest.TempPathFactory):
    """The installed console script in a subprocess, started early to overlap the other runs.

    The wrapper does `sys.exit(main())`; where it is not installed, run exactly that.
    """
    workdir = tmp_path_factory.mktemp("console")
    script = Path(sys.executable).with_name("ps-lightning")
    if script.is_file():
        command = [str(script)]
    else:
        command = [
            sys.executable,
            "-c",
            "import sys; from ps_lightning.cli import main; sys.exit(main())",
        ]
    command += [
        "fit",
        "--config", str(CONFIGS / "original.yaml"),
        "--run", "console",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(workdir / "runs"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # Output goes to a file, not a pipe: a full pipe would stall the child until it is read.
    with open(workdir / "output.log", "w") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=log, env=env)
    yield process, workdir
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, console_run) -> Path:
    """original.yaml, then retrain.yaml on its split.json, run from an unrelated folder."""
    save_dir = tmp_path_factory.mktemp("cli") / "runs"
    workdir = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)  # nothing may depend on, or be written to, the working directory
        fit("original.yaml", save_dir, "--run", "original")
        fit(
            "retrain.yaml",
            save_dir,
            "--run", "retrain",
            "--data.init_args.split_manifest", str(save_dir / "digits/original/split.json"),
        )  # fmt: skip
    assert listing(workdir) == []
    return save_dir


def test_original_run_writes_checkpoint_with_w0_and_record(runs: Path) -> None:
    ckpt = runs / "digits" / "original" / "checkpoints" / "model.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    assert state["initial_prototypes"].shape == (10, 64)
    assert not torch.equal(state["initial_prototypes"], state["net.fc.weight"])  # it trained
    record = checkpoint["ps_lightning"]
    assert record["architecture"] == "LeNet5"
    # The data linked the class count and channels into the model.
    assert record["init_args"]["num_classes"] == 10
    assert record["init_args"]["in_channels"] == 1
    assert record["data"]["train_on"] == "full"


def test_original_run_writes_split_manifest_of_the_default_request(runs: Path) -> None:
    manifest = json.loads((runs / "digits" / "original" / "split.json").read_text())
    assert manifest["dataset"] == "digits"
    assert manifest["request"] == {"kind": "classes", "classes": [1], "ratio": 0.1, "seed": 209}
    assert manifest["num_forget"] == 15
    assert len(manifest["forget_indices"]) == 15


def test_original_run_saves_its_config(runs: Path) -> None:
    config = yaml.safe_load((runs / "digits" / "original" / "config.yaml").read_text())
    assert config["model"]["class_path"] == "ps_lightning.models.LeNet5"
    assert config["data"]["init_args"]["train_on"] == "full"
    assert config["trainer"]["max_epochs"] == 1
    assert config["optimizer"]["class_path"] == "torch.optim.Adam"  # from train/optimizer.yaml


def test_original_run_logs_scalars_to_tensorboard(runs: Path) -> None:
    events = EventAccumulator(str(runs / "digits" / "original"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/test_acc", "val/forget_acc", "val/retain_acc"} <= tags
    assert len(events.Scalars("train/loss")) == 1  # one per epoch: steps only update metrics
    # No stray hp_metric, no per-dataloader suffixes.
    assert "hp_metric" not in tags
    assert not any("dataloader_idx" in tag for tag in tags)


def test_retrain_reuses_the_original_split_and_trains_on_retain(runs: Path) -> None:
    original = json.loads((runs / "digits" / "original" / "split.json").read_text())
    retrain_dir = runs / "digits" / "retrain"
    retrain = json.loads((retrain_dir / "split.json").read_text())
    assert retrain["forget_indices"] == original["forget_indices"]
    assert retrain["calibration_test_indices"] == original["calibration_test_indices"]
    checkpoint = torch.load(
        retrain_dir / "checkpoints" / "model.ckpt", map_location="cpu", weights_only=True
    )
    assert checkpoint["DigitsDataModule"]["train_on"] == "retain"
    assert checkpoint["ps_lightning"]["data"]["train_on"] == "retain"
    assert (
        checkpoint["ps_lightning"]["data"]["split_manifest"]["forget_indices"]
        == original["forget_indices"]
    )


def test_bad_request_fails_before_any_run_directory_exists(tmp_path: Path) -> None:
    save_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"forget_ratio=1.5 is outside \(0, 1\]"):
        fit("original.yaml", save_dir, "--data.init_args.forget_ratio", "1.5")
    assert not save_dir.exists() or listing(save_dir) == []


def test_missing_split_manifest_fails_before_any_run_directory_exists(tmp_path: Path) -> None:
    save_dir = tmp_path / "runs"
    missing = tmp_path / "nowhere" / "split.json"
    with pytest.raises(ValueError, match=r"does not exist\. Train the original model first"):
        fit("retrain.yaml", save_dir, "--data.init_args.split_manifest", str(missing))
    assert listing(tmp_path) == []


def test_console_script_exits_with_status_zero(console_run) -> None:
    process, workdir = console_run
    returncode = process.wait(timeout=300)
    assert returncode == 0, (workdir / "output.log").read_text()[-3000:]
    assert (workdir / "runs" / "digits" / "console" / "checkpoints" / "model.ckpt").is_file()


def test_the_console_scripts_run_prints_its_summary_without_seed_or_model_summary(
    console_run,
) -> None:
    process, workdir = console_run
    assert process.wait(timeout=300) == 0
    output = (workdir / "output.log").read_text()
    assert "Seed set to" not in output
    assert "Trainable params" not in output  # Lightning's model summary: only when asked for
    summary = output[output.index("ps-lightning fit: done in") :].splitlines()
    accuracy = next(line for line in summary if line.startswith("  accuracy    "))
    assert accuracy.endswith("(the last validation epoch)")
