"""The `ps-lightning` command: LightningCLI over every model and datamodule of the project.

`ps-lightning fit --config configs/<dataset>/<step>.yaml` trains an original or retrained model
or runs an unlearning method; `ps-lightning test --config configs/<dataset>/evaluate.yaml`
evaluates a checkpoint.
"""

from __future__ import annotations

import atexit
import sys
import traceback

import lightning as L
import torch.distributed as dist
from lightning.pytorch.cli import LightningCLI

from ps_lightning.data.datamodule import UnlearningDataModule

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "default_hp_metric": False},
    },
}


class PSLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
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

    def _check_model_against_data(self) -> None:
        # Unlearning and evaluation modules check their checkpoints against the split here,
        # before the Trainer creates a run directory, so that bad input writes nothing.
        check = getattr(self.model, "check_data", None)
        if check is not None:
            check(self.datamodule)

    def before_fit(self) -> None:
        self._check_model_against_data()

    def before_test(self) -> None:
        self._check_model_against_data()

    def before_validate(self) -> None:
        self._check_model_against_data()


def _destroy_process_group() -> None:
    # gloo aborts at interpreter exit ("terminate called without an active exception") when a
    # process group is still alive.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


atexit.register(_destroy_process_group)


def cli_main(args: list[str] | None = None, run: bool = True) -> PSLightningCLI:
    return PSLightningCLI(
        L.LightningModule,
        UnlearningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
        run=run,
    )


def _user_error(error: BaseException) -> BaseException | None:
    """The error this project raised for bad input, also when jsonargparse wrapped it while
    instantiating a class (its message then hides ours among the union's alternatives)."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    ours = [
        e
        for e in seen
        if isinstance(e, (ValueError, FileNotFoundError))
        and any("ps_lightning" in frame.filename for frame in traceback.extract_tb(e.__traceback__))
    ]
    return ours[-1] if ours else None


def main() -> None:
    try:
        cli_main()
    except (ValueError, FileNotFoundError, TypeError) as error:
        cause = _user_error(error)
        if cause is None:
            raise
        print(f"ps-lightning: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
