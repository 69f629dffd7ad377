"""What the README's "Guarantees" promise, on digits through the real CLI: interrupted runs are
never taken for finished ones and resume, concurrent cumulative requests remove the union,
refused runs overwrite nothing, bad input gets the project's own message."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import torch
from unlearning_fixtures import (
    CONFIGS,
    ROOT,
    Original,
    fc_weight,
    load_checkpoint,
    nothing_written,
    original,
    result_checkpoint,
    run_cli,
    unlearn,
    write_indices,
)

from ps_lightning.cli import main
from ps_lightning.files import atomic_torch_save, atomic_write_json
from ps_lightning.models import ImageClassifier, LeNet5, load_classifier
from ps_lightning.prototype_surgery.ledger import Ledger, record_path
from ps_lightning.steps import run_step

__all__ = ["original"]  # fixtures used below

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHORT_EPOCHS = [
    "--trainer.max_epochs", "8",
    "--lr_scheduler.init_args.T_max", "8",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
    "--trainer.num_sanity_val_steps", "0",
]  # fmt: skip


def console(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ps_lightning.cli import main; main()", *args]


def cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Run `ps-lightning ARGS`, expecting the project's error exit; returns its message (from
    its `ps-lightning: error:` line on: warnings Lightning printed before it are not ours)."""
    with (
        mock.patch.object(sys, "argv", ["ps-lightning", *args]),
        pytest.raises(SystemExit) as ended,
    ):
        main()
    assert ended.value.code == 2
    err = capsys.readouterr().err
    start = err.find("ps-lightning: error:")
    assert start >= 0, err
    return err[start:]


def cumulative_naive_fit(run: str, ckpt: Path, manifest: Path | str, tmp_path: Path) -> list[str]:
    """The command line of a cumulative Naive PS request ``run`` on ``ckpt`` (digits);
    ``manifest`` "null" draws the split from the request options added after it."""
    return [
        "fit",
        "--config", str(CONFIGS / "naive_ps.yaml"),
        "--run", run,
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--model.init_args.original_ckpt", str(ckpt),
        "--model.init_args.cumulative", "true",
        "--data.init_args.split_manifest", str(manifest),
    ]  # fmt: skip


# --------------------------------------------------------------------------- interrupted training


def test_a_run_killed_during_training_is_not_taken_for_finished_and_resumes(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "digits" / "expid0" / "original"
    args = [
        "fit",
        "--config", str(CONFIGS / "original.yaml"),
        "--run", "expid0/original",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--seed_everything", "0",
        *QUIET,
        *SHORT_EPOCHS,
    ]  # fmt: skip
    last = run_dir / "checkpoints" / "last.ckpt"
    with open(tmp_path / "training.log", "w") as log:
        training = subprocess.Popen(console(*args), stdout=log, stderr=log)
    try:
        while not last.exists() and training.poll() is None:
            time.sleep(0.005)
        training.send_signal(signal.SIGKILL)  # kill -9 at the end of the first epoch
    finally:
        training.wait()
    assert training.returncode == -signal.SIGKILL, (tmp_path / "training.log").read_text()
    snapshot = torch.load(last, weights_only=True)
    assert snapshot["epoch"] < 8 and snapshot["ps_lightning"]["complete"] is False

    # Nothing downstream accepts it: no model.ckpt, and the snapshot is refused by name.
    final = run_dir / "checkpoints" / "model.ckpt"
    assert not final.exists()
    with pytest.raises(ValueError, match=r"not a finished model.*--ckpt_path last"):
        load_classifier(str(last))
    with pytest.raises(ValueError, match="not a finished model"):
        unlearn(tmp_path / "unlearn", "naive", last, manifest=run_dir / "split.json")
    assert nothing_written(tmp_path / "unlearn")

    # make does not skip the step: it resumes it.
    planned = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "chain", "DATASET=digits", f"RUNS_DIR={runs}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    original_step, later_steps = planned.split("original.yaml", 1)[1].split("retrain.yaml", 1)
    assert "--ckpt_path last" in original_step and "--ckpt_path last" not in later_steps

    # Rerun without resuming: refused with the way out; the split is not touched.
    split = (run_dir / "split.json").read_bytes()
    with pytest.raises(FileExistsError, match=r"interrupted run.*--ckpt_path last"):
        run_cli(
            "fit", "original.yaml", runs, "expid0/original", "--seed_everything", "0", *SHORT_EPOCHS
        )
    assert not final.exists() and (run_dir / "split.json").read_bytes() == split

    run_cli(
        "fit", "original.yaml", runs, "expid0/original", "--seed_everything", "0",
        *SHORT_EPOCHS, "--ckpt_path", "last",
    )  # fmt: skip
    finished = torch.load(final, weights_only=True)
    assert finished["ps_lightning"]["complete"] is True
    # It continued from the snapshot (steps counted on), not from scratch.
    assert finished["global_step"] == 8 * 2 and finished["epoch"] == 8
    load_classifier(str(final))
    # And it drew the batches the uninterrupted run draws: the same model, bit for bit.
    straight = run_cli(
        "fit", "original.yaml", runs, "expid0/straight", "--seed_everything", "0", *SHORT_EPOCHS
    )  # fmt: skip
    uninterrupted = torch.load(straight / "checkpoints" / "model.ckpt", weights_only=True)
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(finished["state_dict"][name], tensor), name


def test_a_torn_config_of_a_killed_run_is_named_with_the_fix(tmp_path: Path) -> None:
    # What a kill during Lightning's in-place write left before config.yaml was written whole.
    run_dir = tmp_path / "runs" / "digits" / "torn"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("")
    with pytest.raises(ValueError, match=r"config\.yaml' is empty or damaged.*delete the folder"):
        run_cli("fit", "original.yaml", tmp_path / "runs", "torn", "--ckpt_path", "last")


def test_resuming_with_other_settings_or_a_finished_run_is_refused(
    original: Original, tmp_path: Path
) -> None:
    run_dir = original.ckpt.parents[1]
    with pytest.raises(FileExistsError, match="finished run"):
        run_cli("fit", "original.yaml", run_dir.parents[1], run_dir.name, "--ckpt_path", "last")


# --------------------------------------------------------------------------- concurrency, real CLI


def test_two_concurrent_cumulative_cli_requests_end_with_the_union_removed(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    requests = {"a": [0, 5, 9, 17, 30], "b": [9, 40, 41, 100, 101]}
    union = sorted(set(requests["a"]) | set(requests["b"]))
    processes = []
    for name, ids in requests.items():
        indices_file = write_indices(tmp_path / f"{name}.json", ids)
        args = [
            *cumulative_naive_fit(name, ckpt, "null", tmp_path),
            "--data.init_args.forget", "indices",
            "--data.init_args.forget_indices_file", str(indices_file),
            *QUIET,
        ]  # fmt: skip
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        processes.append((subprocess.Popen(console(*args), stdout=log, stderr=log), log))
    for process, log in processes:
        assert process.wait(timeout=600) == 0, Path(log.name).read_text()
        log.close()

    record = json.loads(record_path(ckpt).read_text())
    assert record["removed_indices"] == union
    last_writer = Path(record["requests"][-1]["result_checkpoint"])
    assert (
        load_checkpoint(last_writer)["ps_lightning"]["data"]["split_manifest"]["forget_indices"]
        == union
    )
    once = unlearn(
        tmp_path / "runs",
        "union-once",
        original.copy_to(tmp_path / "fresh"),
        "--data.init_args.forget", "indices",
        "--data.init_args.forget_indices_file", str(write_indices(tmp_path / "u.json", union)),
    )  # fmt: skip
    torch.testing.assert_close(fc_weight(last_writer), fc_weight(once), rtol=0, atol=1e-6)


def test_a_cumulative_request_killed_after_the_ledger_commit_resumes_to_its_result(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    indices_file = write_indices(tmp_path / "a.json", [0, 5, 9, 17, 30])
    args = [
        *cumulative_naive_fit("a", ckpt, "null", tmp_path),
        "--data.init_args.forget", "indices",
        "--data.init_args.forget_indices_file", str(indices_file),
        *QUIET,
    ]  # fmt: skip
    run_step(args)
    result = tmp_path / "runs" / "digits" / "a" / "checkpoints" / "model.ckpt"
    finished = fc_weight(result)
    # Killed between the ledger's commit (and the union's split.json) and the model's save.
    result.unlink()

    run_step([*args, "--ckpt_path", "last"])

    torch.testing.assert_close(fc_weight(result), finished, rtol=0, atol=1e-6)
    record = json.loads(record_path(ckpt).read_text())
    assert record["removed_indices"] == [0, 5, 9, 17, 30]
    assert len(record["requests"]) == 1  # one request, recorded once


# --------------------------------------------------------------------------- nothing overwritten


def test_a_refused_rerun_leaves_the_finished_runs_split_and_result(
    original: Original, tmp_path: Path
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    result = unlearn(tmp_path / "runs", "naive", ckpt, manifest=original.manifest)
    run_dir = result.parents[1]
    before = {p.name: p.read_bytes() for p in (run_dir / "split.json", result)}
    # Refused as a reused run folder before the data are set up, whatever split it asks for.
    with pytest.raises(FileExistsError, match=r"finished run.*--run NAME"):
        unlearn(tmp_path / "runs", "naive", ckpt, "--data.init_args.forget_ratio", "0.3")
    with pytest.raises(FileExistsError, match="finished run"):
        unlearn(tmp_path / "runs", "naive", ckpt, manifest=original.manifest)
    assert {p.name: p.read_bytes() for p in (run_dir / "split.json", result)} == before


def test_training_into_a_folder_holding_only_a_saved_model_is_refused_and_keeps_it(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # What the Python API's save_to leaves: a model.ckpt and no config.yaml.
    runs = tmp_path / "runs"
    saved = original.copy_to(runs / "digits" / "saved" / "checkpoints")
    before = saved.read_bytes()

    error = cli_error(
        capsys,
        "fit", "--config", str(CONFIGS / "original.yaml"), "--run", "saved",
        "--trainer.logger.init_args.save_dir", str(runs), *QUIET, *SHORT_EPOCHS,
    )  # fmt: skip

    assert error.startswith(
        f"ps-lightning: error: the run folder '{saved.parents[1]}' holds a finished run (its "
        "checkpoints/model.ckpt)"
    )
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parents[1].rglob("*")) == ["checkpoints", "model.ckpt"]


@pytest.mark.parametrize(
    "run", ["../../escape", "/absolute/escape", "", " ", "a/../../escape", "."]
)
def test_a_run_name_that_leaves_the_dataset_folder_is_refused(
    run: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "inside" / "runs"
    error = cli_error(
        capsys,
        "fit", "--config", str(CONFIGS / "original.yaml"), "--run", run,
        "--trainer.logger.init_args.save_dir", str(runs), *QUIET,
    )  # fmt: skip
    assert error.startswith(f"ps-lightning: error: --run {run!r}: ")
    assert "<save_dir>/<dataset>/" in error
    assert list(tmp_path.rglob("*")) == []


def test_a_checkpoint_with_nan_or_inf_weights_is_refused(
    original: Original, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(original.ckpt)
    for value in (float("nan"), float("inf")):
        checkpoint["state_dict"]["net.fc.weight"][0, 0] = value
        broken = tmp_path / "broken" / "model.ckpt"
        atomic_torch_save(broken, checkpoint)
        with pytest.raises(ValueError, match=r"NaN or infinite values in \['net.fc.weight'\]"):
            load_classifier(str(broken))
        for lightning_load in (LeNet5.load_from_checkpoint, ImageClassifier.load_from_checkpoint):
            with pytest.raises(ValueError, match=rf"'{broken}' holds NaN or infinite values"):
                lightning_load(broken)
        with pytest.raises(ValueError, match="NaN or infinite"):
            unlearn(tmp_path / "runs", "naive", broken, manifest=original.manifest)
        assert nothing_written(tmp_path / "runs")


def test_a_full_disk_is_reported_by_file_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "index.pt"
    atomic_torch_save(target, {"old": torch.zeros(2)})
    old = target.read_bytes()
    # A file-size limit makes the write fail as a full device does (EFBIG instead of ENOSPC).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError, match=r"no room to write '.*index\.pt' \(.* bytes\)"):
            atomic_torch_save(target, {"new": torch.zeros(100_000)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.pt"]


def test_a_disk_that_fills_during_training_is_one_line_and_leaves_no_torn_file(
    tmp_path: Path,
) -> None:
    # The child runs under a 200 KiB file-size limit (as a full device, EFBIG for ENOSPC): the
    # first checkpoint of training does not fit. The shell sets the limit, so nothing forks
    # from this process.
    runs = tmp_path / "runs"
    command = [
        "sh", "-c", "trap '' XFSZ; ulimit -f 400; exec \"$0\" \"$@\"",
        sys.executable, "-m", "ps_lightning.steps", "fit",
        "--config", str(CONFIGS / "original.yaml"), "--run", "full",
        "--trainer.logger.init_args.save_dir", str(runs), *QUIET, *SHORT_EPOCHS,
    ]  # fmt: skip

    finished = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)

    assert finished.returncode == 2, finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    # Named where the error names it (Lightning's checkpoint writer raises without a name).
    assert last.startswith("ps-lightning: error: could not write "), finished.stderr
    assert "File too large. Free space or make the folder writable" in last
    leftovers = [p.name for p in runs.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert leftovers == []


def test_temporaries_of_killed_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = tmp_path / f".split.json.{finished.pid}.x1y2.tmp"  # its writer no longer runs
    live = tmp_path / f".split.json.{os.getpid()}.a3b4.tmp"  # a writer still at work
    stale.write_text("{")
    live.write_text("{")
    atomic_write_json(tmp_path / "split.json", {"ok": True})
    assert not stale.exists() and live.exists()


def test_a_writer_killed_before_its_rename_leaves_a_temporary_the_next_write_removes(
    tmp_path: Path,
) -> None:
    target = tmp_path / "model.ckpt.surgery-index.pt"
    code = (
        "import os\n"
        "from ps_lightning import files\n"
        "os.replace = lambda *args: os.kill(os.getpid(), 9)  # killed between write and rename\n"
        f"files.atomic_write({str(target)!r}, lambda handle: handle.write(b'index'))\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name.endswith(".tmp") for p in tmp_path.iterdir()] == [True]
    with Ledger(tmp_path / "model.ckpt", "h").transaction() as state:
        state.set_tensors({"gram": torch.eye(2)})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- the CLI's messages


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("[1.5, 2]", "entry 0 is 1.5 (float), not an integer"),
        ("abc", "line 1 is 'abc', not an integer"),
    ],
    ids=["float", "word"],
)
def test_the_cli_shows_the_projects_message_for_a_bad_indices_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str, names: str
) -> None:
    file = tmp_path / "forget.json"
    file.write_text(content)
    message = cli_error(
        capsys,
        "fit",
        "--config", str(CONFIGS / "retrain.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--data.init_args.forget", "indices",
        "--data.init_args.forget_indices_file", str(file),
    )  # fmt: skip
    assert names in message and str(file) in message
    assert nothing_written(tmp_path / "runs")


def test_a_folder_it_may_not_write_is_one_line_wherever_the_write_was(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a read-only runs folder fails for a user (tests run as root, who may write anywhere):
    # no folder can be made under it, by whichever library tries first.
    runs = tmp_path / "runs"

    def read_only(make: Callable) -> Callable:
        def refuse(path: object, *args: object, **kwargs: object) -> None:
            if str(path).startswith(str(runs)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            make(path, *args, **kwargs)

        return refuse

    monkeypatch.setattr(os, "makedirs", read_only(os.makedirs))
    monkeypatch.setattr(os, "mkdir", read_only(os.mkdir))
    message = cli_error(
        capsys,
        "fit", "--config", str(CONFIGS / "original.yaml"), "--run", "ro",
        "--trainer.logger.init_args.save_dir", str(runs), *QUIET, *SHORT_EPOCHS,
    )  # fmt: skip
    assert message.startswith(f"ps-lightning: error: permission denied on '{runs}"), message
    assert "': make it readable and writable for this user" in message
    assert len(message.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags",
    [
        ["--optimizer", "SGD", "--optimizer.lr", "5.0"],
        ["--lr_scheduler", "StepLR", "--lr_scheduler.step_size", "1"],
    ],
    ids=["optimizer", "lr_scheduler"],
)
def test_lightnings_optimizer_flags_are_refused_for_a_method_that_owns_its_optimizer(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str]
) -> None:
    runs = tmp_path / "runs"
    message = cli_error(
        capsys,
        "fit", "--config", str(CONFIGS / "ps.yaml"), "--run", "ps",
        "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.original_ckpt", str(original.ckpt),
        "--data.init_args.split_manifest", str(original.manifest), *flags,
    )  # fmt: skip
    assert message.startswith(
        "ps-lightning: error: --optimizer / --lr_scheduler: PSUnlearnModule owns its optimizer"
    )
    assert nothing_written(runs)


def test_the_cli_shows_the_ledgers_message_not_the_innermost_error(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    unlearn(
        tmp_path / "runs",
        "a",
        ckpt,
        "--model.init_args.cumulative",
        "true",
        manifest=original.manifest,
    )
    index = ckpt.with_name(ckpt.name + ".surgery-index.pt")
    index.write_bytes(index.read_bytes()[:50])
    message = cli_error(capsys, *cumulative_naive_fit("b", ckpt, original.manifest, tmp_path))
    assert "cannot be used: it cannot be read" in message
    assert "1 cumulative requests removing 15 samples" in message
    assert not result_checkpoint(tmp_path / "runs" / "digits" / "b").exists()


def test_a_full_disk_during_a_cumulative_request_shows_the_ledgers_message(
    original: Original, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = original.copy_to(tmp_path / "original")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # below the index's size
    try:
        message = cli_error(capsys, *cumulative_naive_fit("a", ckpt, original.manifest, tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    # The outermost of the project's errors (each adds what it knows), not the innermost.
    assert message.startswith("ps-lightning: error: cannot write the surgery ledger")
    assert "no room to write" in message and "drop cumulative" in message
    assert not result_checkpoint(tmp_path / "runs" / "digits" / "a").exists()
    assert not record_path(ckpt).exists()
