"""Lightning conventions: the command's subcommands and version listed by `--help` and
`--version`, short class names on the command line, choice options listed by `--help` and
refused otherwise, `load_from_checkpoint` on every checkpoint, the LICENSE."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO_ROOT, command_output
from unlearning_fixtures import Original, naive_reference, original

from ps_lightning.models import ImageClassifier, LeNet5, ResNet20
from ps_lightning.steps import cli_main

__all__ = ["naive_reference", "original"]  # fixtures used below


def cli_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stdout+stderr of ``ps-lightning fit ARGS`` in this process."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["fit", *args])
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


_HELP: dict[tuple[str, str], tuple[int, str]] = {}


def class_help(capsys: pytest.CaptureFixture[str], group: str, name: str) -> tuple[int, str]:
    """``ps-lightning fit --<group>.help <name>``, built once per class (a parser takes ~1 s)."""
    if (group, name) not in _HELP:
        _HELP[group, name] = cli_output(capsys, f"--{group}.help", name)
    return _HELP[group, name]


# A fresh process: in this one, other tests may have imported the classes already.
SHORT_NAMES = """
import contextlib, io, json, sys
from ps_lightning.steps import cli_main
for args, expected in json.loads(sys.argv[1]):
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            cli_main(["fit", *args])
            code = 0
        except SystemExit as exited:
            code = exited.code or 0
    print(json.dumps([args, code, expected in output.getvalue()]))
"""


def test_short_class_names_resolve_as_in_lightningcli() -> None:
    cases = [
        (["--model.help", "PSUnlearnModule"], "--model.original_ckpt"),
        (["--model.help", "LeNet5"], "--model.label_smoothing"),
        (["--model.help", "ResNet20"], "--model.label_smoothing"),
        (["--model.help", "UnlearningEvaluator"], "--model.checkpoints"),
        (["--model.help", "SSD"], "--model.importance_batch_size"),
        (["--model.help", "SalUn"], "--model.mask_ratio"),
        (["--data.help", "DigitsDataModule"], "--data.forget_ratio"),
        (["--data.help", "FashionMNISTDataModule"], "--data.forget_ratio"),
        (
            [
                "--model",
                "PSUnlearnModule",
                "--model.original_ckpt",
                "m.ckpt",
                "--data",
                "DigitsDataModule",
                "--print_config",
            ],
            "class_path: ps_lightning.prototype_surgery.PSUnlearnModule",
        ),
    ]
    finished = subprocess.run(
        [sys.executable, "-c", SHORT_NAMES, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    results = [json.loads(line) for line in finished.stdout.splitlines()]
    assert results == [[args, 0, True] for args, _ in cases]


def test_the_command_help_lists_every_subcommand_on_a_line_saying_what_it_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse's width: a terminal's would be another
    code, out, _ = command_output(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("  SUBCOMMAND") + 1
    listed = [line.split(None, 1) for line in lines[start : lines.index("", start)]]
    assert [name for name, _ in listed] == ["fit", "validate", "test", "predict", "bench"]
    assert all(len(summary.split()) >= 5 for _, summary in listed)


def test_the_command_says_its_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert command_output(capsys, "--version") == (
        0,
        f"ps-lightning {version('ps-lightning')}\n",
        "",
    )


@pytest.mark.parametrize(
    ("subcommand", "option"), [("fit", "--run RUN"), ("test", "--run RUN"), ("bench", "--out OUT")]
)
def test_each_subcommand_answers_help_with_its_own_options(
    capsys: pytest.CaptureFixture[str], subcommand: str, option: str
) -> None:
    code, out, _ = command_output(capsys, subcommand, "--help")
    usage = out.splitlines()[0].split()
    assert code == 0 and usage[:2] == ["usage:", "ps-lightning"] and subcommand in usage
    assert option in out


@pytest.mark.parametrize("args", [[], ["fitt"]])
def test_what_is_no_subcommand_is_refused_naming_every_subcommand(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = command_output(capsys, *args)
    assert (code, out) == (2, "")
    assert err.startswith("usage: ps-lightning [-h] [--version] SUBCOMMAND ...\n")
    assert "ps-lightning: error:" in err
    if args:
        assert "invalid choice: 'fitt'" in err
        assert all(f"'{name}'" in err for name in ("fit", "validate", "test", "predict", "bench"))


# Every choice option of the command, with its choices as `--help` lists them.
CHOICES = [
    ("model", "PSUnlearnModule", "method", "naive,ps,naive+ps,block,auto"),
    ("model", "PSUnlearnModule", "trainable", "bias,weight,weight+bias"),
    ("model", "PSUnlearnModule", "early_stop", "off,on,auto"),
    ("model", "PSUnlearnModule", "anchor_target", "labels,outputs"),
    ("model", "PSUnlearnModule", "optimizer", "adam,sgd"),
    ("model", "PSUnlearnModule", "loss", "soft,paper"),
    ("model", "RandomLabel", "passes", "sequential,joint,union"),
    ("model", "RandomLabel", "labels", "any,wrong"),
    ("model", "SSD", "reference", "full,retain"),
    ("model", "UnlearningEvaluator", "mia_members", "random,first"),
    ("data", "DigitsDataModule", "forget", "classes,random,indices"),
    ("data", "DigitsDataModule", "train_on", "full,retain,forget,forget+retain,forget-then-retain"),
]


@pytest.mark.parametrize(("group", "name", "option", "choices"), CHOICES)
def test_help_lists_the_choices_of_each_choice_option(
    capsys: pytest.CaptureFixture[str], group: str, name: str, option: str, choices: str
) -> None:
    _, output = class_help(capsys, group, name)
    assert f"--{group}.{option} {{{choices}}}" in output


def test_help_lists_auto_beside_numbers_for_rcond(capsys: pytest.CaptureFixture[str]) -> None:
    _, output = class_help(capsys, "model", "PSUnlearnModule")
    assert "Union[float, Literal['auto']]" in " ".join(output.split())


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("trainable", "weights", "'bias', 'weight', 'weight+bias'"),
        ("early_stop", "yes", "'off', 'on', 'auto'"),
        ("rcond", "automatic", "'auto'"),
    ],
)
def test_a_value_outside_the_choices_is_refused_naming_them(
    capsys: pytest.CaptureFixture[str], option: str, value: str, allowed: str
) -> None:
    code, output = cli_output(
        capsys,
        "--config",
        str(REPO_ROOT / "configs" / "digits" / "naive_ps.yaml"),
        f"--model.init_args.{option}",
        value,
    )
    assert code != 0
    assert allowed in output and value in output


def test_the_choice_tuples_are_the_typed_choices() -> None:
    # The runtime checks (for modules built in Python) and the typed options must agree.
    from typing import get_args

    from ps_lightning.prototype_surgery import ps_module

    assert tuple(ps_module.OPTIMIZERS) == get_args(ps_module.OptimizerName)
    assert tuple(ps_module.LOSSES) == get_args(ps_module.LossName)


def same_weights(model: L.LightningModule, checkpoint: Path) -> bool:
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    return all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())


@pytest.mark.parametrize("loader", [L.LightningModule, ImageClassifier, LeNet5])
def test_unlearned_and_original_checkpoints_load_with_lightnings_call(
    original: Original, naive_reference: Path, loader: type[L.LightningModule]
) -> None:
    for checkpoint in (naive_reference, original.ckpt):
        model = loader.load_from_checkpoint(checkpoint, weights_only=True)
        assert type(model) is LeNet5
        assert same_weights(model, checkpoint)


def test_load_from_checkpoint_refuses_another_architecture(naive_reference: Path) -> None:
    with pytest.raises(ValueError, match="holds a LeNet5, not a ResNet20"):
        ResNet20.load_from_checkpoint(naive_reference)


def test_a_model_trained_without_the_cli_loads_with_lightningmodule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ps_lightning.data import DigitsDataModule

    # The optimizer the CLI would add from a config.
    monkeypatch.setattr(
        LeNet5, "configure_optimizers", lambda self: torch.optim.SGD(self.parameters(), lr=0.01)
    )
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    model = LeNet5(num_classes=10, in_channels=1)
    trainer.fit(model, datamodule=DigitsDataModule())
    model._writing_final = True  # the record of a finished model, as on_fit_end writes it
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = L.LightningModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert type(loaded) is LeNet5 and same_weights(loaded, tmp_path / "model.ckpt")


class RunsCodeWhenUnpickled:
    ran = False

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (RunsCodeWhenUnpickled.mark, ())

    @staticmethod
    def mark() -> None:
        RunsCodeWhenUnpickled.ran = True


def test_load_from_checkpoint_runs_no_code_from_the_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    record = {"format": 1, "architecture": "LeNet5", "payload": RunsCodeWhenUnpickled()}
    torch.save({"ps_lightning": record}, checkpoint, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(ValueError, match="could not be read"):
        ImageClassifier.load_from_checkpoint(checkpoint)
    assert not RunsCodeWhenUnpickled.ran


def test_the_license_is_the_mit_license_pyproject_declares() -> None:
    license_text = (REPO_ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2026 ps-lightning contributors" in license_text
    assert 'license = { text = "MIT" }' in (REPO_ROOT / "pyproject.toml").read_text()
