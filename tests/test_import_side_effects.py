"""Importing ps_lightning changes nothing global: a notebook or another library that imports it
keeps its matplotlib backend, exit handlers, warning filters, thread count and logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Run in a fresh interpreter: takes a snapshot of the global state after the libraries the
# package builds on are imported (their own import-time effects are not ours), imports every
# module of the package (pkgutil.walk_packages), takes another, and prints both.
SNAPSHOTS = textwrap.dedent(
    """
    import atexit, importlib, json, logging, pkgutil, warnings
    import lightning.pytorch, matplotlib, torch

    torch.set_num_threads(3)  # a count nobody picks: an import that sets its own shows

    def snapshot():
        loggers = {"": logging.getLogger()} | {
            name: logger
            for name, logger in logging.Logger.manager.loggerDict.items()
            if isinstance(logger, logging.Logger)
        }
        return {
            # The stored value, not get_backend(), which would resolve (and so choose) one.
            "matplotlib backend": str(dict.__getitem__(matplotlib.rcParams, "backend")),
            "atexit callbacks": atexit._ncallbacks(),
            "warnings filters": [repr(f) for f in warnings.filters],
            "torch threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
            "loggers": {
                name: [logger.level, logger.propagate, [repr(h) for h in logger.handlers]]
                for name, logger in loggers.items()
            },
        }

    before = snapshot()
    import ps_lightning
    for info in pkgutil.walk_packages(ps_lightning.__path__, "ps_lightning."):
        importlib.import_module(info.name)
    print(json.dumps({"before": before, "after": snapshot()}))
    """
)


def import_snapshots() -> tuple[dict, dict]:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    snapshots = json.loads(result.stdout.strip().splitlines()[-1])
    return snapshots["before"], snapshots["after"]


def test_importing_every_module_changes_no_global_state() -> None:
    before, after = import_snapshots()
    assert before["torch threads"][0] == 3
    loggers_before, loggers_after = before.pop("loggers"), after.pop("loggers")
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    # A logger that existed is left as it was; one the package creates gets no handler and no
    # level (a library that imports late may add its own, e.g. jsonargparse's null logger).
    changed |= {
        f"logger {name!r}": (state, loggers_after[name])
        for name, state in loggers_before.items()
        if loggers_after[name] != state
    }
    changed |= {
        f"new logger {name!r}": state
        for name, state in loggers_after.items()
        if name.split(".")[0] == "ps_lightning" and state != [0, True, []]
    }
    assert changed == {}, f"importing ps_lightning changed (before, after): {changed}"
