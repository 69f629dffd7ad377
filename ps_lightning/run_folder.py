"""What a run folder holds and the one rule every writer follows: a folder holding a finished
run (a model or an evaluation, whatever wrote it: the command, the Python API's ``save_to``, the
harness) is never written into again, and a run name stays inside ``<save_dir>/<dataset>/``."""

from __future__ import annotations

from pathlib import Path, PurePath

RESULT_CHECKPOINT = Path("checkpoints") / "model.ckpt"  # a training's or a request's result
METRICS_NAME = "metrics.json"  # an evaluation's result
CONFIG_NAME = "config.yaml"  # what the command writes when a run starts
FINISHED = (RESULT_CHECKPOINT, Path(METRICS_NAME))


def finished_files(run_dir: Path) -> list[Path]:
    """The results a finished run left in ``run_dir`` (none for an empty or interrupted one)."""
    return [run_dir / name for name in FINISHED if (run_dir / name).exists()]


def finished_run_error(run_dir: Path, fix: str) -> FileExistsError | None:
    """The error for writing into ``run_dir`` when it holds a finished run (``None`` when it
    does not); ``fix`` says what to do instead."""
    finished = finished_files(run_dir)
    if not finished:
        return None
    names = " and ".join(str(path.relative_to(run_dir)) for path in finished)
    return FileExistsError(
        f"the run folder '{run_dir}' holds a finished run (its {names}), which is never "
        f"written over: {fix}."
    )


def check_run_name(run: object) -> str:
    """A run name (``--run``): a relative path of plain names, so that the run lands inside
    ``<save_dir>/<dataset>/`` (nested names like ``expid0/original`` are fine)."""
    if not isinstance(run, str) or not run.strip():
        raise ValueError(
            f"--run {run!r}: name the run folder (a name like 'ps' or 'expid0/original'; it is "
            "created under <save_dir>/<dataset>/)."
        )
    path = PurePath(run)
    # PurePath drops "." parts: "." alone has none left, the dataset folder itself.
    if (
        path.is_absolute()
        or not path.parts
        or ".." in path.parts
        or run.startswith("~")
        or "\\" in run
    ):
        raise ValueError(
            f"--run {run!r}: a run name is a relative folder name under <save_dir>/<dataset>/, "
            "without '..', a leading '~' or '/' or backslashes; to write elsewhere set "
            "--trainer.logger.init_args.save_dir."
        )
    return run
