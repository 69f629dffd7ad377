"""Helpers shared by the benchmark scripts: threads, timing, child processes, machine facts.

Not a benchmark itself. Each script puts its own folder on ``sys.path`` (Python does so for
``python benchmarks/<name>.py``) and imports this module as ``common``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
CONFIGS = REPO / "configs"
# A child prints one line starting with this marker, then its result as JSON.
RESULT_MARKER = "BENCHMARK-RESULT "
if str(REPO) not in sys.path:  # ps_lightning importable without an install (e.g. a GPU box)
    sys.path.insert(1, str(REPO))


def set_threads(threads: int) -> None:
    """Pin torch (and any child process) to ``threads`` intra-op threads.

    On a shared 2-core machine, two processes that each spin two OpenMP threads slow each other
    down up to 10× (measured); pinning makes side-by-side numbers repeatable.
    """
    torch.set_num_threads(threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


class Clock(NamedTuple):
    """Wall time and this process's CPU time.

    With one torch thread and no loader workers, CPU time is the work itself: unlike wall time
    it does not count the moments other tenants of a shared machine hold the core (wall-time
    repeats spread by ±30% on this 2-core machine while others run).
    """

    wall: float
    cpu: float

    @staticmethod
    def now() -> Clock:
        return Clock(time.perf_counter(), time.process_time())

    def since(self, start: Clock) -> Clock:
        return Clock(self.wall - start.wall, self.cpu - start.cpu)


def median_seconds(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, cpu: bool = False
) -> tuple[float, list[float]]:
    """Median time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones: wall time,
    or this process's CPU time with ``cpu=True`` (see `Clock`)."""
    now = time.process_time if cpu else time.perf_counter
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = now()
        fn()
        times.append(now() - started)
    return statistics.median(times), times


def machine() -> str:
    """CPU model and core count (``lscpu``'s model name), or the GPU when one is used."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def header(title: str, threads: int) -> None:
    print(f"# {title}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {machine()} | torch threads {threads}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average (1 min) at start: {load:.2f}")


def emit_result(result: dict[str, Any]) -> None:
    """What a child process hands back to its parent (see `run_child`)."""
    print(RESULT_MARKER + json.dumps(result), flush=True)


def run_child(script: Path, args: Sequence[str], timeout: float = 900) -> dict[str, Any]:
    """Run ``python <script> <args>`` in a fresh interpreter and return its emitted result.

    A fresh process per measured route: its peak RSS (``ru_maxrss``) then belongs to that
    route alone, torch's allocations included (tracemalloc does not see those).
    """
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise RuntimeError(
        f"child {script.name} {' '.join(args)} failed (exit {completed.returncode}):\n"
        f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    )


def import_seconds(module: str, repeats: int = 2) -> float:
    """Interpreter start-up plus ``import <module>`` in a fresh process (the median)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_idx(path: Path, data: torch.Tensor) -> None:
    """One file in the MNIST idx format (uint8 payload), as torchvision's `MNIST` reads it."""
    magic = 0x0800 + data.dim()  # 0x08: unsigned byte
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(f">{data.dim()}I", *data.shape))
        handle.write(data.to(torch.uint8).contiguous().numpy().tobytes())


def write_fake_mnist(root: Path, num_train: int, num_test: int, seed: int) -> None:
    """Random uint8 28×28 images and random labels as the four real MNIST raw idx files under
    ``<root>/MNIST/raw/``, where torchvision's `MNIST` (and so `MNISTDataModule`) reads them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (count,), dtype=torch.uint8, generator=generator)
        for kind, data in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            write_idx(raw / f"{prefix}-{kind}", data)


def step_args(config: Path, run: str, runs: Path, original: Path) -> list[str]:
    """The arguments every benchmarked CLI step shares: config, run folder, quiet output, the
    original model's split (for every later step) and checkpoint (for unlearning steps)."""
    args = [
        "--config",
        str(config),
        "--run",
        run,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(runs),
    ]
    if config.name != "original.yaml":
        args += ["--data.init_args.split_manifest", str(original / "split.json")]
    if config.name not in ("original.yaml", "retrain.yaml"):
        args += ["--model.init_args.original_ckpt", str(original / "checkpoints" / "model.ckpt")]
    return args


def quiet_lightning() -> None:
    """The product's filter of Lightning's noise (`console.quiet_known_noise`), plus what a
    benchmark's printed figures need even less: every other Lightning info line and the
    loader-workers hint (benchmarks load from memory on purpose)."""
    import logging
    import warnings

    from ps_lightning.console import quiet_known_noise

    quiet_known_noise()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")


def fmt_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
