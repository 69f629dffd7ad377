"""One step of the `ps-lightning` command: LightningCLI over every model and datamodule of the
project, the rules of a run folder, and `run_step`, the one way every caller runs a step.

`PSLightningCLI` is the command's LightningCLI (`fit`, `validate`, `test`, `predict`);
`run_command` runs one of those subcommands as the command does (``python -m ps_lightning.steps
fit ...`` is the same, what `run_step` starts as a child process); `resolved_config` says what a
step would run without running it. The command (`ps_lightning.cli`) and the benchmark harness
(`ps_lightning.harness`) build on this module; it imports neither.
"""

from __future__ import annotations

import atexit
import errno
import functools
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
import yaml
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

# jsonargparse resolves a short class name (`--model PSUnlearnModule`, `--model.help LeNet5`)
# among the subclasses imported so far: import every module class the command offers.
import ps_lightning.evaluation
import ps_lightning.models
import ps_lightning.prototype_surgery.ps_module
import ps_lightning.unlearning  # noqa: F401
from ps_lightning.console import (
    RunProgressBar,
    print_summary,
    quiet_known_noise,
    summary_repeats_quiet,
)
from ps_lightning.data.datamodule import UnlearningDataModule
from ps_lightning.files import MACHINE_ERRNOS, atomic_write_text
from ps_lightning.result_accuracy import result_accuracy
from ps_lightning.run_folder import CONFIG_NAME, check_run_name, finished_files, finished_run_error
from ps_lightning.step_checks import refuse_foreign_optimizer, refuse_pointless_subcommand
from ps_lightning.timing import process_started

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "default_hp_metric": False},
    },
}


def reused_run_folder(
    run_dir: Path, config_name: str, testing: bool, resuming: bool
) -> Exception | None:
    """The error for a run into ``run_dir`` when it holds a finished run (`run_folder`'s rule,
    whatever wrote it) or a run's ``config_name`` already, or ``None`` when that run may go on:
    a training run resumed (``--ckpt_path``) before it finished (whether with the same settings
    is `RunFolderConfig`'s check)."""
    finished = finished_run_error(
        run_dir, "name another run with --run NAME, or delete that folder to redo it"
    )
    if finished is not None:
        return finished
    if not (run_dir / config_name).is_file() or (resuming and not testing):
        return None
    if testing:  # an evaluation has nothing to resume
        state, fix = "an interrupted evaluation", "delete that folder to redo it"
    else:
        state, fix = "an interrupted run", "resume it with the same settings and --ckpt_path last"
    return FileExistsError(
        f"the run folder '{run_dir}' holds {state} (its {config_name}, no result): name another "
        f"run with --run NAME, or {fix}."
    )


class RunFolderConfig(SaveConfigCallback):
    """Writes the run's config.yaml; a run folder that holds one already is refused, unless
    this run resumes it (``--ckpt_path``) with the same settings and it has not finished."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved or not trainer.log_dir:
            return
        run_dir = Path(trainer.log_dir)
        config_path = run_dir / self.config_filename
        # Rank 0 alone looks at the folder: the other processes may start after it wrote there.
        taken = config_path.is_file() or bool(finished_files(run_dir))
        if not trainer.strategy.broadcast(trainer.is_global_zero and taken):
            if trainer.is_global_zero:
                # Through a temporary and a rename (Lightning's own save writes in place): a run
                # killed meanwhile leaves no torn config.yaml to block its resume.
                atomic_write_text(config_path, self.parser.dump(self.config, skip_none=False))
                self.save_config(trainer, pl_module, stage)
            self.already_saved = trainer.strategy.broadcast(True)
            return
        testing = trainer.state.fn == "test"
        resuming = self.config.get("ckpt_path") is not None
        error = reused_run_folder(run_dir, self.config_filename, testing, resuming)
        if error is not None:
            raise error
        saved = yaml.safe_load(config_path.read_text())
        if not isinstance(saved, dict):
            raise ValueError(
                f"'{config_path}' is empty or damaged (a run killed while an older version wrote "
                f"it in place): delete the folder '{run_dir}' and run again."
            )
        current = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        changed = sorted(
            key
            for key in set(saved) | set(current)
            if key != "ckpt_path" and saved.get(key) != current.get(key)
        )
        if changed:
            raise ValueError(
                f"resuming '{run_dir}' with other settings than it was started with (they differ "
                f"in {changed}); resume with the settings of its {self.config_filename}, or "
                "start another run (--run NAME)."
            )
        self.already_saved = True  # the resumed run keeps its own config.yaml


class PSLightningCLI(LightningCLI):
    """The command's LightningCLI: the data decide the model's class count and channels, every
    run lands in its own named folder, and bad input is refused before anything is written."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data decide the class count and input channels; models never repeat them.
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.in_channels", "model.init_args.in_channels", apply_on="instantiate"
        )
        # Every run lands in <save_dir>/<dataset>/<run>/: logs, checkpoints/model.ckpt, config.yaml
        # and split.json side by side, at a path later steps can name.
        parser.add_argument(
            "--run",
            type=str,
            default="run",
            help="Run name: the folder under <save_dir>/<dataset>/.",
        )
        parser.link_arguments("run", "trainer.logger.init_args.version")
        parser.link_arguments(
            "data.dataset_name", "trainer.logger.init_args.name", apply_on="instantiate"
        )

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> L.Trainer:
        # Lightning's own bar, minus its meaningless v_num, wherever Lightning would add one.
        listed = config.get("callbacks") or []
        listed = listed if isinstance(listed, list) else [listed]
        has_bar = any(isinstance(c, ProgressBar) for c in [*listed, *callbacks])
        if config.get("enable_progress_bar") is not False and not has_bar:
            callbacks = [*callbacks, RunProgressBar()]
        if config.get("enable_model_summary") is None:
            # Lightning's table of the module's layers, on every run unless told otherwise, says
            # little here (a closed-form method's "650 trainable params"): only when asked for,
            # --trainer.enable_model_summary true. The config keeps the value given (null).
            config = {**config, "enable_model_summary": False}
        return super()._instantiate_trainer(config, callbacks)

    def _refuse_bad_input(self) -> None:
        # Unlearning and evaluation modules check their checkpoints against the split here,
        # before the Trainer creates a run directory, so that bad input writes nothing.
        check = getattr(self.model, "check_data", None)
        if check is not None:
            check(self.datamodule)
        # A reused run folder too: the Trainer's logger writes an event file into it before
        # RunFolderConfig can refuse it. In one process only; under several, rank 0 writes
        # the folder while the others start, and RunFolderConfig decides for all of them.
        log_dir = self.trainer.log_dir
        if self.trainer.world_size == 1 and log_dir:
            error = reused_run_folder(
                Path(log_dir),
                self.save_config_kwargs.get("config_filename", CONFIG_NAME),
                testing=self.subcommand == "test",
                resuming=self._get(self.config, "ckpt_path") is not None,
            )
            if error is not None:
                raise error

    def before_instantiate_classes(self) -> None:
        # Before the Trainer's logger makes the folder: a name that leaves <save_dir>/<dataset>/
        # is refused, not created.
        check_run_name(self._get(self.config, "run"))
        refuse_pointless_subcommand(
            self.subcommand, self._get(self.config, "model"), self._get(self.config, "data")
        )
        refuse_foreign_optimizer(
            self._get(self.config, "model"),
            self._get(self.config, "optimizer"),
            self._get(self.config, "lr_scheduler"),
        )

    def before_fit(self) -> None:
        self._refuse_bad_input()

    def before_test(self) -> None:
        self._refuse_bad_input()

    def before_validate(self) -> None:
        self._refuse_bad_input()


def _destroy_process_group() -> None:
    # gloo aborts at interpreter exit ("terminate called without an active exception") when a
    # process group is still alive.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _build_cli(
    cli_class: type[PSLightningCLI], args: list[str] | None, run: bool
) -> PSLightningCLI:
    return cli_class(
        L.LightningModule,
        UnlearningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_callback=RunFolderConfig,
        args=args,
        run=run,
    )


class _ParserBuilt(Exception):
    def __init__(self, parser: LightningArgumentParser) -> None:
        self.parser = parser


class _ParseOnlyCLI(PSLightningCLI):
    """The command's own parser, handed back before anything is seeded or instantiated."""

    def parse_arguments(self, parser: LightningArgumentParser, args: object) -> None:
        raise _ParserBuilt(parser)


@functools.cache
def _step_parser() -> LightningArgumentParser:
    try:
        _build_cli(_ParseOnlyCLI, ["fit"], run=True)
    except _ParserBuilt as built:
        return built.parser
    raise AssertionError("LightningCLI no longer calls parse_arguments")


def resolved_config(command: Sequence[str]) -> dict[str, Any]:
    """What a step (``fit ...`` or ``test ...``) would run, without running or building it: its
    config files and their included files read, every command-line value applied and every class
    argument it leaves out filled with that class's default, as LightningCLI resolves them."""
    parser = _step_parser()
    return yaml.safe_load(parser.dump(parser.parse_args(list(command)), skip_none=False))


def cli_main(
    args: list[str] | None = None, run: bool = True, started: float | None = None
) -> PSLightningCLI:
    """Run (or, ``run=False``, only build) one step; a run ends with its summary, whose wall
    time counts from ``started`` (a `time.perf_counter` value: the command's start, which the
    command passes; by default this call's)."""
    started = time.perf_counter() if started is None else started
    quiet_known_noise()
    # Registered by the run, not by importing the module; once, however many runs a process makes.
    atexit.unregister(_destroy_process_group)
    atexit.register(_destroy_process_group)
    with summary_repeats_quiet():
        cli = _build_cli(PSLightningCLI, args, run)
    trainer = cli.trainer
    # `log_dir` is a broadcast: every process must ask, or rank 0 waits on the others alone.
    log_dir = trainer.log_dir if run else None
    if trainer.is_global_zero and log_dir:
        # Before the clock is read: the user waits for it too.
        scored = result_accuracy(cli.subcommand, cli.trainer, cli.model)
        print_summary(cli.subcommand or "", Path(log_dir), time.perf_counter() - started, scored)
    return cli


class StepFailed(RuntimeError):
    """A step failed: run as a child process, the message is the last line it wrote to stderr
    (the benchmark harness records the failure of a method's step and goes on)."""


def run_step(
    command: Sequence[str], *, in_child: bool = False, run: bool = True
) -> PSLightningCLI | None:
    """Run one ``ps-lightning`` step (``command``: ``fit ...`` or ``test ...``), the one way
    every caller (the benchmark harness, the benchmarks, the tests) runs one.

    In this process it returns the CLI (its trainer, model and datamodule); the caller's own
    ``sys.argv`` is hidden from LightningCLI, which reads it besides ``command``. ``run=False``
    only parses and builds (the subcommand is dropped, as LightningCLI wants). With
    ``in_child`` the step runs as ``python -m ps_lightning.steps`` (its own peak memory, its own
    threads), its stdout dropped; a failure raises `StepFailed` and echoes the child's stderr.
    """
    if in_child:
        finished = subprocess.run(
            [sys.executable, "-m", "ps_lightning.steps", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if finished.returncode:
            sys.stderr.write(finished.stderr)
            lines = finished.stderr.strip().splitlines() or [f"exit {finished.returncode}"]
            raise StepFailed(lines[-1])
        return None
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return cli_main(list(command) if run else list(command[1:]), run=run)
    finally:
        sys.argv = argv


def _raised_by_project(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "ps_lightning" in frames[-1].filename


def _user_error(error: BaseException) -> BaseException | None:
    """The outermost error this project raised for bad input, also when jsonargparse wrapped it
    while instantiating a class (its message then hides ours among the union's alternatives);
    an error ours was raised from is detail, never shown instead of ours."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    ours = [
        e
        for e in seen
        if isinstance(e, (ValueError, OSError, FloatingPointError)) and _raised_by_project(e)
    ]
    # A full disk or a folder it may not write is this machine's state, wherever the write was.
    machine = [e for e in seen if isinstance(e, OSError) and e.errno in MACHINE_ERRNOS]
    if not ours and machine:
        error = machine[0]
        where = f"'{error.filename}'" if error.filename else "a file of the run"
        if error.errno in (errno.EACCES, errno.EPERM):  # on a read as on a write
            return OSError(
                f"permission denied on {where}: make it readable and writable for this user, "
                "or pass another --trainer.logger.init_args.save_dir (or data_dir)."
            )
        return OSError(
            f"could not write {where}: {error.strerror}. Free space or make the folder "
            "writable (or pass another --trainer.logger.init_args.save_dir), then run again; "
            "an interrupted training resumes with --ckpt_path last."
        )
    return ours[0] if ours else None


def run_command(args: list[str] | None = None, started: float | None = None) -> None:
    """Run one LightningCLI subcommand (``fit``, ``validate``, ``test``, ``predict`` and its
    arguments: ``args``, or this process's own when ``None``) as the command does: an error the
    project raised for bad input is one line, ``ps-lightning: error: ...``, and exit status 2.
    ``started``: when the command began, for its summary's wall time (see `cli_main`)."""
    try:
        cli_main(args, started=started)
    except (ValueError, OSError, TypeError, RuntimeError, FloatingPointError) as error:
        cause = _user_error(error)
        if cause is None:
            raise
        print(f"ps-lightning: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_command(started=process_started())
