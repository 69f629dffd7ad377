"""The harness's steps: per seed and scenario the chain original → retrain → each method →
evaluation, every step cached under the digest of its resolved configuration.

`Harness.plan` keys a step by what it would run (`resolved_config`: config files, included
files, command-line values, class defaults), so a config edit re-runs the steps it touches and
nothing else; `Harness.step` runs it through `run_step` unless a finished run of that key
exists, and records the key and the commit of the configs' checkout (`source_commit`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ps_lightning.console import StepProgress
from ps_lightning.files import atomic_write_json
from ps_lightning.harness.methods import SCENARIOS
from ps_lightning.prototype_surgery.options import BLOCK_OPTIONS, BLOCK_OPTIONS_ADDED, HEAD_METHODS
from ps_lightning.run_folder import METRICS_NAME, finished_files
from ps_lightning.steps import StepFailed, resolved_config, run_step

ARCHITECTURE_PATH = "ps_lightning.models."
# What a step's key writes for the harness's runs folder; the file in a step's run folder that
# records its key and the commit that ran it.
RUNS_DIR_KEY = "<runs-dir>"
STEP_RECORD = "bench-step.json"


@dataclass(frozen=True)
class Step:
    """One CLI step of the harness: its command (without the run's name and folder), the
    SHA-256 of its resolved configuration, and the run folder that digest names."""

    command: list[str]
    digest: str
    run_dir: Path


def source_commit(folder: Path) -> str | None:
    """The commit of the git checkout that holds ``folder`` (the configs the steps run),
    ``-dirty`` with uncommitted changes to its tracked files, or ``None`` outside a checkout."""
    try:
        head, status = (
            subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if status else "")


def drop_unread_block_options(init_args: dict) -> None:
    """Leave method block's options out of the key of a PS step whose method never reads them,
    and those added later out while they do what every block step did before them
    (`BLOCK_OPTIONS_ADDED`): they change nothing it computes, and keys of steps planned before
    they existed stay valid."""
    for name, before in BLOCK_OPTIONS_ADDED.items():
        if name in init_args and init_args[name] == before:
            init_args.pop(name)
    if init_args.get("method") in HEAD_METHODS:
        for name in BLOCK_OPTIONS:
            init_args.pop(name, None)


class Harness:
    """The steps of one dataset: ``configs/<dataset>/*.yaml`` (``configs``: the folder of the
    datasets' configs, ``configs`` of the working directory unless named) run with ``extra``
    after every step's arguments, each step's run folder under ``runs_dir`` (``isolate``: each
    step in a child process)."""

    def __init__(
        self,
        dataset: str,
        runs_dir: Path,
        isolate: bool,
        extra: list[str],
        max_epochs: int | None = None,
        configs: Path = Path("configs"),
        architecture: str | None = None,
        training_extra: list[str] | None = None,
        method_extra: dict[str, list[str]] | None = None,
    ) -> None:
        self.dataset = dataset
        self.configs = configs.resolve() / dataset
        # Absolute: the steps' keys write it as <runs-dir> wherever their arguments name it.
        self.runs_dir = runs_dir.resolve()
        self.isolate = isolate
        self.extra = extra
        self.max_epochs, self.architecture = max_epochs, architecture
        self.training_extra = list(training_extra or [])
        # Per method, after its overrides: e.g. the peers trained in bf16 like original and
        # retrain, while PS and the evaluation stay as configured.
        self.method_extra = {name: list(args) for name, args in (method_extra or {}).items()}
        # Once, before this run writes anything: its own tables would otherwise make the
        # checkout look edited to every later step.
        self.commit = source_commit(self.configs)
        self.progress = StepProgress(total=None)
        # Only for original and retrain training: the methods read the architecture from the
        # original's checkpoint.
        self.training = (
            [] if architecture is None else ["--model", ARCHITECTURE_PATH + architecture]
        )
        if max_epochs is not None:
            self.training += [
                "--trainer.max_epochs",
                str(max_epochs),
                "--lr_scheduler.init_args.T_max",
                str(max_epochs),
            ]
        # e.g. bf16 training on a CPU with AMX; the methods and the evaluation stay as configured.
        self.training += self.training_extra

    def settings(self) -> dict[str, Any]:
        """The arguments besides the configs that every step's key holds: ``Harness(dataset,
        runs_dir, isolate, **settings)`` plans the same steps again."""
        return {
            "extra": self.extra,
            "max_epochs": self.max_epochs,
            "architecture": self.architecture,
            "training_extra": self.training_extra,
            "method_extra": self.method_extra,
        }

    def plan(self, subcommand: str, config: str, run: str, args: list[str]) -> Step:
        """A step as it would run, keyed by what it would run: `resolved_config` of its command
        (config files, included files, command-line values and every class default), with this
        harness's runs folder written as ``<runs-dir>``, so that the key is the same on every
        machine and still names the upstream steps' runs (whose names hold their own keys)."""
        command = [subcommand, "--config", str(self.configs / config), *args, *self.extra]
        resolved = resolved_config(command)
        resolved[subcommand].pop("run")  # the harness names the run after the key
        # Where the images sit (host or accelerator) changes no number a step computes: keys of
        # steps planned before the option existed stay valid.
        resolved[subcommand].get("data", {}).get("init_args", {}).pop("data_on_device", None)
        drop_unread_block_options(resolved[subcommand].get("model", {}).get("init_args", {}))
        text = json.dumps(resolved, sort_keys=True).replace(str(self.runs_dir), RUNS_DIR_KEY)
        digest = hashlib.sha256(text.encode()).hexdigest()
        run_dir = self.runs_dir / self.dataset / f"{run}-{digest[:12]}"
        return Step(command, digest, run_dir)

    def step(self, subcommand: str, config: str, run: str, args: list[str]) -> Path:
        """Run one CLI step unless a finished run of the same configuration exists; return its
        run directory, which holds `STEP_RECORD`: its configuration's digest and the commit of
        the configs' checkout that ran it (`source_commit`)."""
        planned = self.plan(subcommand, config, run, args)
        run_dir = planned.run_dir
        if finished_files(run_dir):
            self.progress.finished(ran=False)
            return run_dir
        if run_dir.exists():  # an interrupted attempt: its files are incomplete
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        atomic_write_json(
            run_dir / STEP_RECORD,
            {
                "config_digest": planned.digest,
                "commit": self.commit,
                "command": planned.command,
            },
        )
        command = [
            *planned.command,
            "--run",
            run_dir.name,
            "--trainer.logger.init_args.save_dir",
            str(self.runs_dir),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ]
        print(self.progress.line(f"running {run} …"), flush=True)
        try:
            run_step(command, in_child=self.isolate)
        except StepFailed:
            raise
        except Exception as error:  # any method error: recorded, the benchmark goes on
            raise StepFailed(f"{type(error).__name__}: {error}") from error
        finally:
            self.progress.finished(ran=True)
        return run_dir

    def seed_run(
        self, seed: int, scenario: str, methods: dict[str, tuple[str, list[str]]]
    ) -> dict[str, Any]:
        """Every step of one seed and scenario; the evaluation's summary with the methods that
        failed, the seed, the methods run, and each step's run, configuration digest and
        commit."""
        runs, failed = self.seed_steps(seed, scenario, methods)
        summary = json.loads((runs["evaluate"] / METRICS_NAME).read_text())
        summary["failed"] = failed
        summary["seed"] = seed
        # The methods of this run, in its order: its evaluation listed them (less the failed).
        summary["methods_run"] = list(methods)
        summary["steps"] = {name: step_record(run_dir) for name, run_dir in runs.items()}
        return summary

    def seed_steps(
        self, seed: int, scenario: str, methods: dict[str, tuple[str, list[str]]]
    ) -> tuple[dict[str, Path], dict[str, str]]:
        """Run (`step`) original, retrain, each method and the evaluation of one seed and
        scenario: their run folders by name, and the methods that failed with the reason."""
        request = [*SCENARIOS[scenario], "--data.init_args.seed", str(seed)]
        original = self.step(
            # Without the request: one original model per seed serves every scenario.
            "fit",
            "original.yaml",
            f"s{seed}-original",
            ["--seed_everything", str(seed), *self.training],
        )
        retrain = self.step(
            "fit",
            "retrain.yaml",
            f"s{seed}-{scenario}-retrain",
            [
                "--seed_everything",
                str(seed),
                *request,
                "--data.init_args.split_manifest",
                "null",
                *self.training,
            ],
        )
        manifest = ["--data.init_args.split_manifest", str(retrain / "split.json")]
        checkpoints = {
            "original": original / "checkpoints/model.ckpt",
            "retrain": retrain / "checkpoints/model.ckpt",
        }
        failed: dict[str, str] = {}
        for name, (config, overrides) in methods.items():
            try:
                run = self.step(
                    "fit",
                    config,
                    f"s{seed}-{scenario}-{name}",
                    [
                        *request,
                        *manifest,
                        "--model.init_args.original_ckpt",
                        str(checkpoints["original"]),
                        *overrides,
                        *self.method_extra.get(name, []),
                    ],
                )
            except StepFailed as error:
                print(f"  {name} FAILED: {error}", flush=True)
                failed[name] = str(error)
                continue
            checkpoints[name] = run / "checkpoints/model.ckpt"
        listing = "{" + ", ".join(f"{k}: {v}" for k, v in checkpoints.items()) + "}"
        evaluation = self.step(
            "test",
            "evaluate.yaml",
            f"s{seed}-{scenario}-evaluate",
            [
                *request,
                *manifest,
                "--model.init_args.checkpoints",
                listing,
                "--model.init_args.retrain",
                "retrain",
            ],
        )
        runs = {name: path.parents[1] for name, path in checkpoints.items()}
        return {**runs, "evaluate": evaluation}, failed


def step_record(run_dir: Path) -> dict[str, Any]:
    """A step's run folder name, configuration digest and commit (`STEP_RECORD`)."""
    path = run_dir / STEP_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {
        "run": run_dir.name,
        "config_digest": record.get("config_digest"),
        "commit": record.get("commit"),
    }


def planned_steps(scenarios: int, seeds: int, methods: int) -> int:
    """The steps `Harness.seed_run` makes for every scenario and seed: the original model (a
    cache hit after the first scenario), retraining, each method and the evaluation."""
    return scenarios * seeds * (methods + 3)
