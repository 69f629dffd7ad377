"""The `ps-lightning` command: its subcommands, and where each one goes.

`ps-lightning fit --config configs/<dataset>/<step>.yaml` trains an original or retrained model
or runs an unlearning method and `ps-lightning test --config configs/<dataset>/evaluate.yaml`
evaluates checkpoints (`validate` and `predict` as LightningCLI offers them): one step each,
run by `ps_lightning.steps`. `ps-lightning bench ...` runs the benchmark harness
(`ps_lightning.harness`). Each subcommand parses its own arguments; this module only chooses
it, and answers ``--help`` (every subcommand) and ``--version``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from ps_lightning.harness.main import main as bench_main
from ps_lightning.steps import run_command

# The LightningCLI subcommands, each one step (`ps_lightning.steps`), and the harness: what
# `ps-lightning --help` says of each, on one line.
STEP_COMMANDS = {
    "fit": "train an original or retrained model, or unlearn with a method",
    "validate": "one evaluation epoch of a model over its validation set",
    "test": "evaluate checkpoints side by side: metrics.json and table.md",
    "predict": "a model's predictions over a datamodule (Lightning's loop)",
}
COMMANDS = {**STEP_COMMANDS, "bench": "the benchmark harness: every method, seed and scenario"}
# LightningCLI's own options, given before its subcommand (`-c` reads a file of every
# subcommand's settings): handed to it as they were before `bench` shared the command.
LIGHTNING_OPTIONS = ("-c", "--config", "--print_config")


def package_version() -> str:
    """The installed package's version, as its metadata records it."""
    try:
        return version("ps-lightning")
    except PackageNotFoundError:
        return "(not installed: no version recorded)"


def command_parser() -> argparse.ArgumentParser:
    """The command's top-level parser: its help lists every subcommand, and it refuses what is
    no subcommand. A subcommand's arguments are its own parser's (LightningCLI's, the
    harness's): this one never sees them."""
    parser = argparse.ArgumentParser(
        prog="ps-lightning",
        description="Machine unlearning with Prototype Surgery on PyTorch Lightning.",
        epilog=f"LightningCLI's own options ({', '.join(LIGHTNING_OPTIONS)}) go before "
        f"{'|'.join(STEP_COMMANDS)}, as LightningCLI takes them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subcommands = parser.add_subparsers(
        title="subcommands",
        description="`ps-lightning SUBCOMMAND --help` lists a subcommand's options.",
        dest="subcommand",
        metavar="SUBCOMMAND",
        required=True,
    )
    for name, summary in COMMANDS.items():
        subcommands.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``ps-lightning ARGS`` (``argv``, or this process's own arguments when ``None``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    # Unless told otherwise, LightningCLI reads the process's arguments itself.
    lightning_args = None if argv is None else args
    if args and args[0].split("=", 1)[0] in LIGHTNING_OPTIONS:
        run_command(lightning_args)
        return
    # The subcommand alone: help, the version, or the error naming every subcommand end here.
    subcommand = command_parser().parse_args(args[:1]).subcommand
    if subcommand == "bench":
        bench_main(args[1:])
    else:
        run_command(lightning_args)


if __name__ == "__main__":
    main()
