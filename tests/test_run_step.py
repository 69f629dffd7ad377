"""`run_step`, the one way a CLI step runs: in this process or as a child process."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

from ps_lightning.steps import StepFailed, run_step

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "digits"


def test_a_step_in_this_process_hides_the_callers_own_arguments_from_lightningcli(
    tmp_path: Path,
) -> None:
    callers_argv = ["benchmark-script", "--threads", "2"]
    with mock.patch.object(sys, "argv", callers_argv), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli = run_step(
            [
                "fit",
                "--config",
                str(CONFIGS / "original.yaml"),
                "--trainer.logger.init_args.save_dir",
                str(tmp_path),
            ],
            run=False,
        )
        assert sys.argv == callers_argv  # given back after the step
    # LightningCLI warns when it sees command-line arguments besides the ones it is given.
    assert not [w for w in seen if "sys.argv" in str(w.message)]
    assert cli is not None and cli.model.hparams.num_classes == 10


def test_a_failed_child_step_raises_with_its_last_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(StepFailed, match=r"missing\.yaml"):
        run_step(["fit", "--config", str(missing)], in_child=True)
