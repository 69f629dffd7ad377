"""The `ps-lightning` command: its subcommands, and where each one goes.

`ps-lightning fit --config configs/<dataset>/<step>.yaml` trains an original or retrained model
or runs an unlearning method and `ps-lightning test --config configs/<dataset>/evaluate.yaml`
evaluates checkpoints (`validate` and `predict` as LightningCLI offers them, refused for a
module they have nothing to run for): one step each, run by `ps_lightning.steps`.
`ps-lightning bench ...` runs the benchmark harness (`ps_lightning.harness`). Each subcommand
parses its own arguments; this module only chooses it, and answers ``--help``, ``--version``
and a missing or unknown subcommand itself.

Those answers come before ``import lightning``, which takes most of the 6-9 s every other
answer waits for (``benchmarks/startup.py``): this module imports nothing heavy at its top,
and the steps and the harness are imported only once a subcommand is chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

# When this module was imported: the command's start where the process's own cannot be read
# (`ps_lightning.timing.process_started` reads it on Linux, interpreter start-up included).
IMPORTED = time.perf_counter()

# Wrapped by hand, as the epilog's commands are: the help keeps both as written.
DESCRIPTION = """\
Machine unlearning with Prototype Surgery (Liu et al., CCS 2025) on PyTorch
Lightning: train an image classifier, make it forget some of its training
samples in seconds (Prototype Surgery or a peer method), and measure how close
the result is to a model retrained without them."""
# The command's first screen says how a chain runs, by the shipped digits configs.
EPILOG = """\
a chain on the embedded digits data (`make demo` runs it and prints the table):
  ps-lightning fit --config configs/digits/original.yaml --run original
  ps-lightning fit --config configs/digits/ps.yaml --run ps \\
    --model.init_args.original_ckpt runs/digits/original/checkpoints/model.ckpt \\
    --data.init_args.split_manifest runs/digits/original/split.json
  ps-lightning test --config configs/digits/evaluate.yaml ...  (the table)

LightningCLI's own options ({options}) go before
{steps}, as LightningCLI takes them."""

# The LightningCLI subcommands, each one step (`ps_lightning.steps`), and the harness: what
# `ps-lightning --help` says of each, on one line.
STEP_COMMANDS = {
    "fit": "train an original or retrained model, or unlearn with a method",
    "validate": "one validation epoch of a trained classifier (a --ckpt_path)",
    "test": "evaluate checkpoints side by side: metrics.json and table.md",
    "predict": "Lightning's predict loop, for a datamodule with a predict loader",
}
COMMANDS = {**STEP_COMMANDS, "bench": "the benchmark harness: every method, seed and scenario"}
# LightningCLI's own options, given before its subcommand (`-c` reads a file of every
# subcommand's settings): handed to it as they were before `bench` shared the command.
LIGHTNING_OPTIONS = ("-c", "--config", "--print_config")


def package_version() -> str:
    """The installed package's version, as its metadata records it."""
    # Imported here: importlib.metadata costs ~40 ms, which only --help and --version need.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ps-lightning")
    except PackageNotFoundError:
        return "(not installed: no version recorded)"


class _VersionAction(argparse.Action):
    """argparse's ``version`` action, reading the version only when asked for it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def command_parser() -> argparse.ArgumentParser:
    """The command's top-level parser: its help lists every subcommand, and it refuses what is
    no subcommand. A subcommand's arguments are its own parser's (LightningCLI's, the
    harness's): this one never sees them."""
    parser = argparse.ArgumentParser(
        prog="ps-lightning",
        description=DESCRIPTION,
        epilog=EPILOG.format(options=", ".join(LIGHTNING_OPTIONS), steps="|".join(STEP_COMMANDS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction)
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
    if not (args and args[0].split("=", 1)[0] in LIGHTNING_OPTIONS):
        # The subcommand alone: help, the version, or the error naming every subcommand end
        # here, before anything below imports Lightning.
        subcommand = command_parser().parse_args(args[:1]).subcommand
        if subcommand == "bench":
            from ps_lightning.harness.main import main as bench_main

            bench_main(args[1:])
            return
    from ps_lightning.steps import run_command
    from ps_lightning.timing import process_started

    started = process_started()
    run_command(lightning_args, started=IMPORTED if started is None else started)


if __name__ == "__main__":
    main()
