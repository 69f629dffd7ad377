"""What runs print: the summary each run ends with, none of Lightning's noise, progress bars
where work is long, and a one-line error for a reused run folder."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from unlearning_fixtures import (
    CONFIGS,
    DEFAULT_NUM_FORGET,
    Original,
    naive_in_child,
    original,  # noqa: F401  (a fixture)
    retrain_ckpt,  # noqa: F401  (a fixture)
    run_cli,
)

from ps_lightning import cli, steps
from ps_lightning.console import (
    RunProgressBar,
    StepProgress,
    progress,
    quiet_known_noise,
    run_summary,
    trainer_progress,
)
from ps_lightning.files import atomic_torch_save, atomic_write_json

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
)


@pytest.fixture(scope="module")
def naive_child_run(original: Original, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """A digits Naive PS run through the real command in a child process, its progress bar on
    (as by default), stdout and stderr captured together."""
    folder = tmp_path_factory.mktemp("naive-child")
    return naive_in_child(original.copy_to(folder / "original"), original.manifest, folder)


def test_a_naive_ps_run_prints_none_of_lightnings_noise(naive_child_run) -> None:
    output, _ = naive_child_run
    assert [line for line in NOISE_LINES if line in output] == []
    # Lightning's other lines still pass: the filters are by name, not a blanket silence.
    assert "Seed set to 0" in output


def test_a_naive_ps_run_ends_with_its_summary(naive_child_run) -> None:
    output, run_dir = naive_child_run
    summary = output[output.index("ps-lightning fit: done in") :].splitlines()
    # "  <label, 12 wide><value>"
    fields = {line[2:14].strip(): line[14:] for line in summary[1:] if line.strip()}
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


def test_the_feature_pass_shows_a_bar_when_the_trainers_bar_is_on(naive_child_run) -> None:
    output, _ = naive_child_run
    # tqdm's frames: count of batches out of the pass's total, elapsed<remaining.
    assert re.search(r"feature pass: +0%\|.*\| 0/\d+ \[00:00<\?", output)


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
    text = run_summary("fit", _fake_run(tmp_path, record), wall_seconds=9.25)
    assert text.splitlines() == [
        "ps-lightning fit: done in 9.2 s (wall time)",
        "  request     fashion_mnist, random (ratio 0.1, seed 3): forget 6000 samples, "
        "retain 54000",
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
    bar = object()
    assert trainer_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=bar))
    assert not trainer_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=None))
    assert not trainer_progress(SimpleNamespace(is_global_zero=False, progress_bar_callback=bar))
    assert not trainer_progress(None)


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
