"""Where the seconds before a `ps-lightning` command does anything go: imports vs parsing, and
the answers that need no Lightning at all (``--help``, ``--version``, a wrong subcommand).

Each route runs in a fresh interpreter, in interleaved rounds; wall time and the child's CPU
time (user + sys, `RUSAGE_CHILDREN`) are reported as medians. Then one ``python -X importtime``
run of a step's imports says which packages those seconds belong to.

``--baseline DIR`` times every route a second time with the package of ``DIR`` first on the
path (another version of ``ps_lightning/``, e.g. ``git archive <commit> ps_lightning | tar -x -C
DIR``), interleaved with this checkout's runs so that both see the same load on a shared
machine: before and after side by side.

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CONFIGS, REPO, header, set_threads

SKLEARN = "sklearn.svm, sklearn.linear_model, sklearn.preprocessing"
COMMAND = ["-m", "ps_lightning.cli"]
ROUTES = {
    "import lightning (not ours: the floor)": ["-c", "import lightning"],
    "import ps_lightning.cli (the command's own imports)": ["-c", "import ps_lightning.cli"],
    "import ps_lightning.steps (a step's imports)": ["-c", "import ps_lightning.steps"],
    "... plus scikit-learn (were it imported eagerly)": [
        "-c",
        f"import ps_lightning.steps, {SKLEARN}",
    ],
    "ps-lightning --help": [*COMMAND, "--help"],
    "ps-lightning --version": [*COMMAND, "--version"],
    "ps-lightning fitt (a wrong subcommand: exit 2)": [*COMMAND, "fitt"],
    "ps-lightning fit --config digits/naive_ps.yaml --print_config": [
        *COMMAND,
        "fit",
        "--config",
        str(CONFIGS / "digits" / "naive_ps.yaml"),
        "--print_config",
    ],
}
# Packages whose cumulative import time the breakdown reports (the top-level import of each).
PACKAGES = (
    "lightning",
    "torch",
    "torchvision",
    "torch._dynamo",
    "torchmetrics",
    "scipy.signal",
    "matplotlib.pyplot",
    "jsonargparse",
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(args: list[str], package_root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS`` in a fresh process (its output dropped), with
    the package of ``package_root`` first on the path: run from that folder, which ``-c`` and
    ``-m`` put before any other. A wrong subcommand exits 2 on purpose; any other failure
    stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    cpu, wall = children_cpu(), time.perf_counter()
    finished = subprocess.run(
        [sys.executable, *args], capture_output=True, cwd=package_root, env=env, check=False
    )
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if finished.returncode not in (0, 2):
        raise RuntimeError(f"{args} failed: {finished.stderr.decode()[-2000:]}")
    return wall, cpu


def import_breakdown() -> dict[str, float]:
    """Cumulative import seconds of each package in `PACKAGES`, and the project's own."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ps_lightning.steps"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stderr
    cumulative: dict[str, float] = {}
    own = 0.0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        fields = line.split("|")
        name = fields[2].strip()
        if not fields[0].split(":")[1].strip().isdigit():
            continue  # the header line
        self_us, cumulative_us = int(fields[0].split(":")[1]), int(fields[1])
        if name in PACKAGES and name not in cumulative:
            cumulative[name] = cumulative_us / 1e6
        if name.startswith("ps_lightning"):
            own += self_us / 1e6
    return {**cumulative, "ps_lightning (own modules, self time)": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a folder holding another version of ps_lightning/, timed beside this checkout",
    )
    args = parser.parse_args()
    set_threads(1)
    sides = {"this checkout": REPO}
    if args.baseline is not None:
        if not (args.baseline / "ps_lightning" / "__init__.py").is_file():
            parser.error(f"'{args.baseline}' holds no ps_lightning/ package")
        sides["baseline"] = args.baseline.resolve()
    header("start-up: imports vs parsing (fresh processes)", 1)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {
        (route, side): [] for route in ROUTES for side in sides
    }
    run_once(ROUTES["import lightning (not ours: the floor)"], REPO)  # warm the file cache
    keys = list(times)
    for round_number in range(args.repeats):
        rotation = round_number % len(keys)
        for route, side in keys[rotation:] + keys[:rotation]:
            times[route, side].append(run_once(ROUTES[route], sides[side]))
    print(f"{'route':66s} {'side':>14s} {'wall s':>8s} {'cpu s':>8s}")
    medians = {}
    for (route, side), runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[route, side] = cpu
        print(f"{route:66s} {side:>14s} {wall:8.2f} {cpu:8.2f}")
    print("\nimport -X importtime of `import ps_lightning.steps` (cumulative wall seconds):")
    for name, seconds in sorted(import_breakdown().items(), key=lambda item: -item[1]):
        print(f"  {name:40s} {seconds:6.2f}")
    here = {route: medians[route, "this checkout"] for route in ROUTES}
    floor = here["import lightning (not ours: the floor)"]
    steps = here["import ps_lightning.steps (a step's imports)"]
    print(f"\nours beyond `import lightning` (cpu): {steps - floor:+.2f} s")
    parsed = here["ps-lightning fit --config digits/naive_ps.yaml --print_config"]
    print(f"parsing beyond the imports (cpu): {parsed - steps:+.2f} s")
    eager = here["... plus scikit-learn (were it imported eagerly)"]
    print(f"lazy scikit-learn saves (cpu): {eager - steps:+.2f} s")


if __name__ == "__main__":
    main()
