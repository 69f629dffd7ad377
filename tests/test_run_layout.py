"""The configs, `make` and the README's by-hand commands name the same run folders: after
`make demo` (or the commands by hand) another step is one `ps-lightning fit --config` away."""

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
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
# Per config: what makes the step quick (one short epoch of training).
QUICK = {
    "original.yaml": ["--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1"],
    "retrain.yaml": ["--trainer.max_epochs", "1", "--lr_scheduler.init_args.T_max", "1"],
    "ps.yaml": ["--model.init_args.epochs", "2"],
}


def options(command: list[str]) -> dict[str, str]:
    """``--key value`` pairs of a ps-lightning command line (every option here takes a value)."""
    start = next(i for i, word in enumerate(command) if word.endswith("ps-lightning")) + 2
    words = command[start:]
    return dict(zip(words[::2], words[1::2], strict=True))


def make_commands(dataset: str) -> list[dict[str, str]]:
    """The ps-lightning steps ``make <dataset>`` runs, with their default variables."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "chain", f"DATASET={dataset}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    return [options(shlex.split(line)) for line in dry_run.splitlines() if "ps-lightning" in line]


def config(dataset: str, name: str) -> dict:
    return yaml.safe_load((CONFIGS / dataset / name).read_text())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("dataset", DATASETS)
def test_configs_name_the_runs_and_files_make_writes_and_reads(dataset: str) -> None:
    data = config(dataset, "data.yaml")["init_args"]
    steps = {}
    for step in make_commands(dataset):
        name = Path(step["--config"]).name
        steps[name] = step
        shipped = config(dataset, name)
        assert shipped["run"] == step["--run"], name
        # Make's request is the shared block's.
        assert yaml.safe_load(step["--data.init_args.forget_classes"]) == data["forget_classes"]
        assert float(step["--data.init_args.forget_ratio"]) == data["forget_ratio"]
        assert int(step["--data.init_args.seed"]) == data["seed"]
        if step.get("--data.init_args.split_manifest", "null") != "null":
            assert step["--data.init_args.split_manifest"] == data["split_manifest"], name
        if "--model.init_args.original_ckpt" in step:
            original = step["--model.init_args.original_ckpt"]
            assert shipped["model"]["init_args"]["original_ckpt"] == original, name
        if "--model.init_args.checkpoints" in step:
            checkpoints = yaml.safe_load(step["--model.init_args.checkpoints"])
            assert shipped["model"]["init_args"]["checkpoints"] == checkpoints
    assert set(steps) == {
        f"{s}.yaml" for s in ("original", "retrain", "naive_ps", "ps", "evaluate")
    }
    # The manifest every later step reads is the one the retrain run writes.
    retrain = steps["retrain.yaml"]
    runs = Path(retrain["--trainer.logger.init_args.save_dir"]) / dataset
    assert Path(data["split_manifest"]) == runs / retrain["--run"] / "split.json"
    # The peers that make does not run sit beside Naive PS, on the same original model.
    naive = config(dataset, "naive_ps.yaml")
    request_folder = Path(naive["run"]).parent
    for path in sorted((CONFIGS / dataset).glob("*.yaml")):
        shipped = yaml.safe_load(path.read_text())
        if path.stem in ("data", "original"):
            continue
        assert Path(shipped["run"]) == request_folder / path.stem, path
        original_ckpt = shipped["model"].get("init_args", {}).get("original_ckpt")
        if original_ckpt is not None:
            assert original_ckpt == naive["model"]["init_args"]["original_ckpt"], path


def readme_by_hand_commands() -> list[list[str]]:
    """The ps-lightning lines of the README's "By hand, on digits" block, as argument lists."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("By hand, on digits:", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    return [shlex.split(line)[1:] for line in block.splitlines() if "ps-lightning" in line]


def test_the_readme_by_hand_chain_runs_and_a_further_step_needs_only_a_run_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the configs' runs/ paths are relative to where one works
    commands = readme_by_hand_commands()
    assert [c[2] for c in commands[:5]] == [
        f"configs/digits/{name}.yaml"
        for name in ("original", "retrain", "naive_ps", "ps", "evaluate")
    ]
    for command in commands:
        name = Path(command[2]).name
        command[2] = str(CONFIGS / "digits" / name)
        run_step([*command, *QUIET, *QUICK.get(name, [])])
    request = tmp_path / "runs/digits/expid0/seed209-ratio0.1-classes1"
    table = (request / "evaluate" / "table.md").read_text()
    assert all(f"| {model} |" in table for model in ("original", "retrain", "naive_ps", "ps"))
    # The further step: its own folder, the retrain run's split, the shipped original model.
    further = tmp_path / "runs/digits" / commands[5][commands[5].index("--run") + 1]
    assert further.parent == request and further.name != "ps"
    split = json.loads((further / "split.json").read_text())
    assert split == json.loads((request / "retrain" / "split.json").read_text())
    record = torch.load(further / "checkpoints/model.ckpt", weights_only=True)["ps_lightning"]
    assert (
        record["unlearning"]["original_ckpt"]
        == "runs/digits/expid0/original/checkpoints/model.ckpt"
    )
    assert record["unlearning"]["config"]["lr"] == 0.1
