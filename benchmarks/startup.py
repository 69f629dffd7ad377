"""Where the seconds before a `ps-lightning` command does anything go: imports vs parsing.

Each route runs in a fresh interpreter, in interleaved rounds; wall time and the child's CPU
time (user + sys, `RUSAGE_CHILDREN`) are reported as medians. Then one ``python -X importtime``
run of the command's imports says which packages those seconds belong to.

    .venv/bin/python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from common import CONFIGS, REPO, header, set_threads

SKLEARN = "sklearn.svm, sklearn.linear_model, sklearn.preprocessing"
ROUTES = {
    "import lightning (not ours: the floor)": ["-c", "import lightning"],
    "import ps_lightning.cli (the command's imports)": ["-c", "import ps_lightning.cli"],
    "... plus scikit-learn (were it imported eagerly)": [
        "-c",
        f"import ps_lightning.cli, {SKLEARN}",
    ],
    "fit --config digits/naive_ps.yaml --print_config (imports + parsing)": [
        "-m",
        "ps_lightning.cli",
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
    "scipy.signal",
    "matplotlib.pyplot",
    "jsonargparse",
)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS`` in a fresh process (its output dropped)."""
    cpu, wall = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - wall, children_cpu() - cpu


def import_breakdown() -> dict[str, float]:
    """Cumulative import seconds of each package in `PACKAGES`, and the project's own."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ps_lightning.cli"],
        check=True,
        capture_output=True,
        text=True,
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
    args = parser.parse_args()
    set_threads(1)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    header("start-up: imports vs parsing (fresh processes)", 1)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ROUTES}
    run_once(ROUTES["import lightning (not ours: the floor)"])  # warm the file cache
    for round_number in range(args.repeats):
        names = list(ROUTES)
        rotation = round_number % len(names)
        for name in names[rotation:] + names[:rotation]:
            times[name].append(run_once(ROUTES[name]))
    print(f"{'route':72s} {'wall s':>8s} {'cpu s':>8s}")
    medians = {}
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[name] = cpu
        print(f"{name:72s} {wall:8.2f} {cpu:8.2f}")
    print("\nimport -X importtime of `import ps_lightning.cli` (cumulative wall seconds):")
    for name, seconds in sorted(import_breakdown().items(), key=lambda item: -item[1]):
        print(f"  {name:40s} {seconds:6.2f}")
    floor, imports, eager, parsed = medians.values()
    print(f"\nours beyond `import lightning` (cpu): {imports - floor:+.2f} s")
    print(f"parsing beyond the imports (cpu): {parsed - imports:+.2f} s")
    print(f"lazy scikit-learn saves (cpu): {eager - imports:+.2f} s")


if __name__ == "__main__":
    main()
