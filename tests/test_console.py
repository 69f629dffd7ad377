"""What runs print: the summary each run ends with (the result's accuracy, the whole command's
wall time), none of Lightning's noise, progress bars on a terminal and plain lines elsewhere,
and a one-line error for a reused run folder."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities import rank_zero_info
from unlearning_fixtures import (
    CONFIGS,
    DEFAULT_NUM_FORGET,
    Original,
    original,  # noqa: F401  (a fixture)
    retrain_ckpt,  # noqa: F401  (a fixture)
    run_cli,
    tensorboard_events,
)

from ps_lightning import cli, steps
from ps_lightning.console import (
    ResultAccuracy,
    RunProgressBar,
    StepProgress,
    progress,
    quiet_known_noise,
    run_summary,
    summary_repeats_quiet,
    trainer_progress,
)
from ps_lightning.data import DigitsDataModule
from ps_lightning.files import atomic_torch_save, atomic_write_json
from ps_lightning.metrics import accuracy
from ps_lightning.models import ImageClassifier

# Lines of Lightning's noise a plain run printed before (issue 13), as they read.
NOISE_LINES = (
    "💡 Tip:",
    "litlogger",
    "litmodels",
    "GPU available",
    "TPU available",
    "HPU available",
    "LeafSpec",
    "No seed found",
    "Setting it to 1000 epochs",
    "max_epochs=0",
    "validation_step",
    "log_every_n_steps",
    "module(s) in eval mode",
    "v_num",
    "weights_only` was not set",
    "Seed set to",
    # Lightning's model summary, shown only when asked for.
    "Trainable params",
)
# What a child prints before the command starts: the seconds its interpreter and `import
# lightning` took, which the command's wall time must count.
BEFORE_THE_COMMAND = (
    "import sys, time; began = time.perf_counter(); time.sleep(1); import lightning; "
    "print('before the command', time.perf_counter() - began, flush=True); "
    "from ps_lightning.cli import main; sys.exit(main())"
)


@pytest.fixture(scope="module")
def naive_child_run(original: Original, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """A digits Naive PS run through the real command in a child process, as a user launches
    it, its progress bar on (as by default) and its output into a pipe, stdout and stderr
    together; the child sleeps a second and imports Lightning before the command starts."""
    folder = tmp_path_factory.mktemp("naive-child")
    command = [
        sys.executable, "-c", BEFORE_THE_COMMAND,
        "fit",
        "--config", str(CONFIGS / "naive_ps.yaml"),
        "--run", "naive",
        "--model.init_args.original_ckpt", str(original.copy_to(folder / "original")),
        "--data.init_args.split_manifest", str(original.manifest),
        "--trainer.logger.init_args.save_dir", str(folder / "runs"),
    ]  # fmt: skip
    started = time.perf_counter()
    finished = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder
    )
    outside = time.perf_counter() - started
    assert finished.returncode == 0, finished.stdout[-3000:]
    return finished.stdout, folder / "runs" / "digits" / "naive", outside


def summary_fields(output: str) -> dict[str, str]:
    """The summary's ``  <label, 12 wide><value>`` lines by label, and its first line's."""
    summary = output[output.index("ps-lightning fit: done in") :].splitlines()
    fields = {line[2:14].strip(): line[14:] for line in summary[1:] if line.strip()}
    return {"": summary[0], **fields}


def test_a_naive_ps_run_prints_none_of_lightnings_noise(naive_child_run) -> None:
    output, _, _ = naive_child_run
    assert [line for line in NOISE_LINES if line in output] == []


def test_a_naive_ps_run_ends_with_its_summary(naive_child_run) -> None:
    output, run_dir, _ = naive_child_run
    fields = summary_fields(output)
    expected_request = (
        f"digits, classes (classes [1], ratio 0.1, seed 209): forget {DEFAULT_NUM_FORGET} "
        "samples, retain 1422"
    )
    timing = json.loads((run_dir / "timing.json").read_text())
    assert fields["request"] == expected_request
    assert fields["result"] == str(run_dir / "checkpoints" / "model.ckpt")
    assert fields["run folder"] == str(run_dir)
    assert fields["fit time"].startswith(f"{timing['fit_seconds']:.2f} s on cpu")
    assert "early stop" not in fields  # Naive PS has no early stop


def scores_of(checkpoint: Path, manifest: Path) -> tuple[list[str], list[int]]:
    """A result checkpoint's accuracy on the forget, retain-validation and test splits, read
    afresh from the file (as the summary prints them) and the splits' sample counts."""
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = DigitsDataModule(split_manifest=str(manifest))
    scores, counts = [], []
    for split in ("forget", "retain_val", "test"):
        images, labels = data.samples(split).tensors
        with torch.no_grad():
            logits = model(data.model_input(images))
        scores.append(f"{accuracy(logits, labels):.3f}")
        counts.append(len(labels))
    return scores, counts


def test_the_summary_gives_the_results_forget_retain_and_test_accuracy(naive_child_run) -> None:
    output, run_dir, _ = naive_child_run
    scores, counts = scores_of(run_dir / "checkpoints" / "model.ckpt", run_dir / "split.json")
    assert summary_fields(output)["accuracy"] == (
        f"forget {scores[0]}, retain {scores[1]}, test {scores[2]} "
        f"(of {counts[0]}, {counts[1]} and {counts[2]} samples)"
    )


def test_the_summary_counts_the_whole_commands_wall_time(naive_child_run) -> None:
    output, run_dir, outside = naive_child_run
    reported = float(summary_fields(output)[""].split("done in ")[1].split(" s")[0])
    timing = json.loads((run_dir / "timing.json").read_text())
    # The child's own clock when the command began: a second of sleep and Lightning's import
    # behind it, which the run's own span (set-up, fit, summary) leaves out.
    before = next(line for line in output.splitlines() if line.startswith("before the command"))
    waited = float(before.split()[-1])
    assert waited > 1.0
    assert waited + timing["fit_seconds"] - 0.1 <= reported <= outside + 0.1


def test_a_run_into_a_pipe_prints_no_progress_bar_fragments(naive_child_run) -> None:
    output, _, _ = naive_child_run
    # tqdm's frames: carriage returns, "|####| n/N [elapsed<remaining, rate]".
    assert "\r" not in output
    assert "it/s]" not in output
    assert "feature pass" not in output


def test_an_unlisted_warning_and_log_line_still_pass() -> None:
    quiet_known_noise()
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn("the forget set is empty", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["the forget set is empty"]
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        logger.warning("GPU available: True (cuda), used: True")
        logger.warning("Restoring states from the checkpoint path at last.ckpt")
    finally:
        logger.removeHandler(handler)
    assert records == ["Restoring states from the checkpoint path at last.ckpt"]


# --------------------------------------------------------------------------- the summary
def _fake_run(folder: Path, unlearning: dict | None) -> Path:
    atomic_write_json(
        folder / "split.json",
        {
            "dataset": "fashion_mnist",
            "request": {"kind": "random", "ratio": 0.1, "seed": 3},
            "num_forget": 6000,
            "num_retain": 54000,
        },
    )
    atomic_write_json(
        folder / "timing.json", {"fit_seconds": 2.5, "device": "cuda:0", "peak_host_mib": 1234.4}
    )
    atomic_torch_save(
        folder / "checkpoints" / "model.ckpt", {"ps_lightning": {"unlearning": unlearning}}
    )
    return folder


def test_the_summary_reads_request_result_times_and_the_early_stop_from_the_run(
    tmp_path: Path,
) -> None:
    record = {"early_stop_outcome": "stopped training at epoch 7; kept the head of step 12"}
    scored = ResultAccuracy(0.0004, 0.9876, None, samples=(6000, 2000, None))
    text = run_summary("fit", _fake_run(tmp_path, record), wall_seconds=9.25, accuracy=scored)
    assert text.splitlines() == [
        "ps-lightning fit: done in 9.2 s (wall time)",
        "  request     fashion_mnist, random (ratio 0.1, seed 3): forget 6000 samples, "
        "retain 54000",
        "  accuracy    forget 0.000, retain 0.988, test – (of 6000, 2000 and – samples)",
        f"  result      {tmp_path / 'checkpoints' / 'model.ckpt'}",
        f"  run folder  {tmp_path}",
        "  fit time    2.50 s on cuda:0 (peak host memory 1234 MiB)",
        "  early stop  stopped training at epoch 7; kept the head of step 12",
    ]


@pytest.fixture(scope="module")
def evaluation_printed(
    original: Original,  # noqa: F811
    retrain_ckpt: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, list[str]]:
    save_dir = tmp_path_factory.mktemp("evaluation-printed")
    args = [
        "--model.init_args.checkpoints",
        json.dumps({"original": str(original.ckpt), "retrain": str(retrain_ckpt)}),
        "--data.init_args.split_manifest",
        str(original.manifest),
        "--model.init_args.relearn_max_steps",
        "2",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_dir = run_cli("test", "evaluate.yaml", save_dir, "evaluate", *args)
    return printed.getvalue(), run_dir, args


def test_ps_lightning_test_prints_the_table(evaluation_printed) -> None:
    printed, run_dir, _ = evaluation_printed
    table = (run_dir / "table.md").read_text()
    assert "| original |" in table and "| retrain |" in table
    assert printed.rstrip().endswith(table.rstrip())


def test_a_reused_run_folder_is_one_line_naming_the_flag_that_renames(
    evaluation_printed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run_dir, args = evaluation_printed
    command = [
        "ps-lightning", "test",
        "--config", str(CONFIGS / "evaluate.yaml"),
        "--run", run_dir.name,
        "--trainer.logger.init_args.save_dir", str(run_dir.parent.parent),
        "--trainer.enable_progress_bar", "false",
        *args,
    ]  # fmt: skip
    before = sorted(p.name for p in run_dir.iterdir())
    monkeypatch.setattr(sys, "argv", command)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        f"ps-lightning: error: the run folder '{run_dir}' holds a finished run (its metrics.json), "
        "which is never written over: name another run with --run NAME, or delete that folder "
        "to redo it."
    ]
    assert sorted(p.name for p in run_dir.iterdir()) == before


# --------------------------------------------------------------------------- progress
def test_a_bar_shows_count_and_eta_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress(range(3), "probes", total=3, enabled=True)) == [0, 1, 2]
    shown = capsys.readouterr().err
    # The bar is removed when done; its first frame shows the total and the ETA field.
    assert "probes:   0%|          | 0/3 [00:00<?, ?it/s]" in shown
    assert list(progress(range(3), "probes", total=3, enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_work_inside_a_trainer_shows_a_bar_as_lightnings_own_does() -> None:
    bar = RunProgressBar(terminal=True)
    assert trainer_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=bar))
    assert not trainer_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=None))
    assert not trainer_progress(SimpleNamespace(is_global_zero=False, progress_bar_callback=bar))
    assert not trainer_progress(None)
    # Off a terminal the Trainer's bar draws nothing, and neither does the work inside it.
    piped = RunProgressBar(terminal=False)
    assert not trainer_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=piped))


def test_the_progress_bar_draws_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert RunProgressBar().is_enabled
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert not RunProgressBar().is_enabled


def test_off_a_terminal_each_training_epoch_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RunProgressBar, "line_interval", 0.0)  # every epoch, however quick
    command = [
        "fit",
        "--config", str(CONFIGS / "original.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0",
    ]  # fmt: skip
    built = steps.run_step(command)
    assert built is not None
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2 done", "epoch 2/2 done"]
    # Each with that epoch's own metrics, as TensorBoard has them (3 significant digits).
    events = tensorboard_events(tmp_path / "digits" / "run")
    for epoch, line in enumerate(lines):
        shown = dict(item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", "))
        assert sorted(shown) == ["train/loss", "val/test_acc"]
        for tag, value in shown.items():
            assert float(value) == pytest.approx(events.Scalars(tag)[epoch].value, abs=0.006)
    assert "it/s]" not in printed.out + printed.err and "\r" not in printed.out + printed.err
    # A training run's summary gives the scores its last validation epoch logged.
    logged = [
        float(built.trainer.callback_metrics[f"val/{s}_acc"]) for s in ("forget", "retain", "test")
    ]
    assert summary_fields(printed.out)["accuracy"] == (
        f"forget {logged[0]:.3f}, retain {logged[1]:.3f}, test {logged[2]:.3f} "
        "(the last validation epoch)"
    )


def test_an_early_stop_message_is_printed_once_by_a_command_and_kept_by_the_api() -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    loggers = [
        logging.getLogger(f"lightning.{p}.utilities.rank_zero") for p in ("pytorch", "fabric")
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with summary_repeats_quiet():  # a command's step: its summary says it
            rank_zero_info("PS's early stop kept the starting head (ps_kept_start_state): ...")
        rank_zero_info("PS's early stop kept the starting head (ps_kept_start_state): ...")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert records == ["PS's early stop kept the starting head (ps_kept_start_state): ..."]


def test_step_progress_counts_cached_steps_as_done_but_not_in_the_rate() -> None:
    steps = StepProgress(total=4)
    assert steps.line("running a").startswith("  [0/4 done, 00:00 elapsed, ETA ?] running a")
    steps.finished(ran=False)
    steps.finished(ran=True)
    steps.started -= 60.0  # one step ran in a minute: two remain, about two minutes
    assert steps.line("running c") == "  [2/4 done, 01:00 elapsed, ETA 02:00] running c"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_progress_bar_drops_lightnings_v_num_and_respects_the_switch(
    tmp_path: Path, enabled: bool
) -> None:
    built = steps.run_step(
        [
            "fit",
            "--config",
            str(CONFIGS / "original.yaml"),
            "--run",
            "expid0/original",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            str(enabled).lower(),
        ],
        run=False,
    )
    assert built is not None
    bar = built.trainer.progress_bar_callback
    if not enabled:
        assert bar is None
        return
    assert isinstance(bar, RunProgressBar)
    # Lightning would show the last four characters of the run name: "inal".
    assert built.trainer.logger.version == "expid0/original"
    assert bar.get_metrics(built.trainer, built.model) == {}
