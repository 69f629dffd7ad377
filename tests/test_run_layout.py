"""Run folders are named in one place: `make` names the chain's (the README's by-hand commands
are make's), the benchmark harness its own, no config any. After `make demo` (or the commands
by hand) another step is one `ps-lightning fit` away, with the same flags."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT

from ps_lightning.steps import run_step

CONFIGS = REPO_ROOT / "configs"
DATASETS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir())
CHAIN = ("original", "retrain", "naive_ps", "ps", "evaluate")
MODELS = ("original", "retrain", "naive_ps", "ps")
# The flags that name a step's run folder and the files of other runs it reads.
LAYOUT = (
    "--config",
    "--run",
    "--model.init_args.original_ckpt",
    "--data.init_args.split_manifest",
    "--model.init_args.checkpoints",
)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# Per config: what makes the step quick (one short epoch of training).
QUICK = {
    "original.yaml": ["--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1"],
    "retrain.yaml": ["--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1"],
    "ps.yaml": ["--model.init_args.epochs", "2"],
}
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def options(command: list[str]) -> dict[str, str]:
    """``--key value`` pairs of a ps-lightning command line (every option here takes a value)."""
    start = next(i for i, word in enumerate(command) if word.endswith("ps-lightning")) + 2
    words = command[start:]
    return dict(zip(words[::2], words[1::2], strict=True))


def make_commands(dataset: str, *variables: str) -> dict[str, dict[str, str]]:
    """The ps-lightning steps ``make <dataset>`` runs, with its default variables but for
    ``variables`` (``NAME=value``), by step; an option given twice keeps its last value, as the
    CLI does."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "chain", f"DATASET={dataset}", *variables],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    commands = [shlex.split(line) for line in dry_run.splitlines() if "ps-lightning" in line]
    return {Path(options(c)["--config"]).stem: options(c) for c in commands}


@needs_make
def test_training_args_reach_original_and_retrain_training_alone() -> None:
    steps = make_commands("cifar10", "TRAINING_ARGS=--trainer.precision bf16-mixed")
    precision = {name: step["--trainer.precision"] for name, step in steps.items()}
    assert precision == {
        "original": "bf16-mixed",
        "retrain": "bf16-mixed",
        "naive_ps": "32-true",
        "ps": "32-true",
        "evaluate": "32-true",
    }


@needs_make
def test_a_whole_class_chain_evaluates_ps_without_naive_ps_which_refuses_it() -> None:
    steps = make_commands("digits", "RATIO=1.0")
    assert set(steps) == set(CHAIN) - {"naive_ps"}
    evaluated = yaml.safe_load(steps["evaluate"]["--model.init_args.checkpoints"])
    assert list(evaluated) == ["original", "retrain", "ps"]
    assert evaluated["ps"] == str(
        Path(steps["ps"]["--trainer.logger.init_args.save_dir"])
        / "digits"
        / steps["ps"]["--run"]
        / "checkpoints"
        / "model.ckpt"
    )


def test_no_config_names_a_run_folder_or_a_file_of_a_run() -> None:
    for path in sorted(CONFIGS.rglob("*.yaml")):
        text = path.read_text()
        assert "runs/" not in text, path
        loaded = yaml.safe_load(text)
        assert not (isinstance(loaded, dict) and "run" in loaded), path


@needs_make
@pytest.mark.parametrize("dataset", DATASETS)
def test_make_names_each_run_and_hands_each_step_the_files_of_the_runs_before_it(
    dataset: str,
) -> None:
    steps = make_commands(dataset)
    assert set(steps) == set(CHAIN)
    runs = Path(steps["original"]["--trainer.logger.init_args.save_dir"]) / dataset
    folder = {name: runs / step["--run"] for name, step in steps.items()}
    model = {name: str(folder[name] / "checkpoints" / "model.ckpt") for name in MODELS}
    # The request's steps side by side, in a folder of the original model's parent.
    request = folder["retrain"].parent
    assert all(folder[name].parent == request for name in CHAIN[1:])
    assert request.parent == folder["original"].parent
    data = yaml.safe_load((CONFIGS / dataset / "data.yaml").read_text())["init_args"]
    for name, step in steps.items():
        # Make's request is the shared block's.
        assert yaml.safe_load(step["--data.init_args.forget_classes"]) == data["forget_classes"]
        assert float(step["--data.init_args.forget_ratio"]) == data["forget_ratio"]
        assert int(step["--data.init_args.seed"]) == data["seed"]
        # Original and retrain draw the split; every later step reads the one retrain wrote.
        manifest = step.get("--data.init_args.split_manifest", "null")
        expected = (
            "null" if name in ("original", "retrain") else str(folder["retrain"] / "split.json")
        )
        assert manifest == expected, name
        unlearning = name in ("naive_ps", "ps")
        assert step.get("--model.init_args.original_ckpt") == (
            model["original"] if unlearning else None
        )
    assert yaml.safe_load(steps["evaluate"]["--model.init_args.checkpoints"]) == model


def readme_by_hand_commands() -> list[list[str]]:
    """The ps-lightning commands of docs/usage.md's "By hand, on digits" block as the shell runs
    them (its variables expanded), as argument lists after ``ps-lightning``."""
    readme = (REPO_ROOT / "docs" / "usage.md").read_text()
    block = readme.split("By hand, on digits", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    shown = subprocess.run(
        [
            "bash",
            "-euc",
            'show() { printf "%q " "$@"; echo; }\n'
            + block.replace(".venv/bin/ps-lightning", "show"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in shown.splitlines()]


@needs_make
def test_the_readme_by_hand_chain_is_makes() -> None:
    commands = readme_by_hand_commands()
    made = make_commands("digits")
    assert [Path(c[2]).stem for c in commands[: len(CHAIN)]] == list(CHAIN)
    for command in commands[: len(CHAIN)]:
        by_hand = dict(zip(command[1::2], command[2::2], strict=True))
        step = made[Path(by_hand["--config"]).stem]
        for flag in LAYOUT:
            # Make's retrain says `split_manifest null`, the default.
            mine, makes = by_hand.get(flag, "null"), step.get(flag, "null")
            assert yaml.safe_load(mine) == yaml.safe_load(makes), (command[2], flag)


def test_the_readme_by_hand_chain_runs_and_a_further_step_needs_only_a_run_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the commands' runs/ paths are relative to where one works
    commands = readme_by_hand_commands()
    for command in commands:
        name = Path(command[2]).name
        command[2] = str(CONFIGS / "digits" / name)
        run_step([*command, *QUIET, *QUICK.get(name, [])])
    request = tmp_path / "runs/digits/expid0/seed209-ratio0.1-classes1"
    table = (request / "evaluate" / "table.md").read_text()
    assert all(f"| {model} |" in table for model in MODELS)
    # The further step: its own folder, the retrain run's split, the chain's original model.
    further = (
        tmp_path / "runs/digits" / commands[len(CHAIN)][commands[len(CHAIN)].index("--run") + 1]
    )
    assert further.parent == request and further.name != "ps"
    split = json.loads((further / "split.json").read_text())
    assert split == json.loads((request / "retrain" / "split.json").read_text())
    record = torch.load(further / "checkpoints/model.ckpt", weights_only=True)["ps_lightning"]
    assert (
        record["unlearning"]["original_ckpt"]
        == "runs/digits/expid0/original/checkpoints/model.ckpt"
    )
    assert record["unlearning"]["config"]["lr"] == 0.1
