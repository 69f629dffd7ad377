"""The `ps-lightning` command as a newcomer meets it: help, version and a wrong subcommand
answered before Lightning is imported, `bench` with LightningCLI's help and config files, a
subcommand that has nothing to run refused in one line, and the model summary only on request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, command_output
from lightning.pytorch.callbacks import ModelSummary

from ps_lightning.harness.main import parse
from ps_lightning.step_checks import refuse_pointless_subcommand
from ps_lightning.steps import run_step

CONFIGS = REPO_ROOT / "configs" / "digits"

# A fresh interpreter: this one has imported Lightning already.
BEFORE_LIGHTNING = """
import contextlib, io, json, sys
from ps_lightning.cli import main
codes = []
for args in (["--help"], ["--version"], ["fitt"], []):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(args)
        except SystemExit as exited:
            codes.append(exited.code or 0)
heavy = ("lightning", "lightning_fabric", "torch", "jsonargparse", "ps_lightning.steps")
print(json.dumps([codes, [name for name in heavy if name in sys.modules]]))
"""


def test_help_version_and_a_wrong_subcommand_answer_before_lightning_is_imported() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", BEFORE_LIGHTNING], capture_output=True, text=True, check=True
    )
    codes, imported = json.loads(finished.stdout.splitlines()[-1])
    assert codes == [0, 0, 2, 2]
    assert imported == []


def test_the_help_says_what_the_tool_does_and_how_a_chain_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = command_output(capsys, "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "Machine unlearning with Prototype Surgery" in out
    assert "make it forget some of its training samples" in text
    assert "ps-lightning fit --config configs/digits/original.yaml" in out
    assert "    bench     the benchmark harness" in out


def test_bench_answers_help_as_lightningcli_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = command_output(capsys, "bench", "--help")
    text = " ".join(out.split())
    assert code == 0 and out.startswith("usage: ps-lightning bench")
    # LightningCLI's options and its way of showing each option's type and default.
    assert "-c CONFIG, --config CONFIG" in text and "--print_config" in text
    assert "(type: int, default: [0, 1, 2, 3, 4])" in text
    assert "(type: str, default: runs/bench)" in text
    assert "%%" not in text and "--trainer- arg" not in text


def test_bench_reads_its_options_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(f"runs_dir: {tmp_path / 'runs'}\nseeds: [3]\nmethods: [ps]\n")
    args, methods, _ = parse(["--config", str(config), "--seeds", "4", "--configs", "configs"])
    assert args.runs_dir == tmp_path / "runs" and args.out == tmp_path / "runs" / "results"
    assert args.seeds == [4]  # a flag after the file overrides it
    assert list(methods) == ["ps"]


@pytest.mark.parametrize(
    ("subcommand", "config", "message"),
    [
        (
            "validate",
            "ps.yaml",
            "`ps-lightning validate` has nothing to run for PSUnlearnModule (PSUnlearnModule "
            "defines no validation_step): it runs under fit; its result is scored by "
            "`ps-lightning test --config configs/<dataset>/evaluate.yaml`.",
        ),
        (
            "fit",
            "evaluate.yaml",
            "`ps-lightning fit` has nothing to run for UnlearningEvaluator (UnlearningEvaluator "
            "defines no training_step): it runs under test.",
        ),
        (
            "predict",
            "original.yaml",
            "`ps-lightning predict` has nothing to run for LeNet5 (DigitsDataModule defines no "
            "predict_dataloader): it runs under fit, validate and test.",
        ),
    ],
)
def test_a_subcommand_with_nothing_to_run_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    subcommand: str,
    config: str,
    message: str,
) -> None:
    code, out, err = command_output(
        capsys,
        subcommand,
        "--config", str(CONFIGS / config),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    )  # fmt: skip
    assert (code, out, err) == (2, "", f"ps-lightning: error: {message}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_subcommand_a_module_runs_is_not_refused() -> None:
    classifier = {"class_path": "ps_lightning.models.LeNet5"}
    data = {"class_path": "ps_lightning.data.DigitsDataModule"}
    for subcommand in ("fit", "validate", "test"):
        refuse_pointless_subcommand(subcommand, classifier, data)
    method = {"class_path": "ps_lightning.prototype_surgery.PSUnlearnModule"}
    refuse_pointless_subcommand("fit", method, data)


@pytest.mark.parametrize(("asked", "shown"), [([], False), (["true"], True)])
def test_the_model_summary_shows_only_when_asked_for(
    tmp_path: Path, asked: list[str], shown: bool
) -> None:
    flag = ["--trainer.enable_model_summary", *asked] if asked else []
    command = [
        "fit",
        "--config", str(CONFIGS / "original.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ]  # fmt: skip
    built = run_step([*command, *flag], run=False)
    assert built is not None
    assert any(isinstance(c, ModelSummary) for c in built.trainer.callbacks) == shown
