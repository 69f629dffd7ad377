"""The Python API's requests in one process: the first (features and surgery index built) and
the ones after it (both reused), Naive PS and PS, on the embedded digits.

    .venv/bin/python benchmarks/api_requests.py [--repeats 5] [--epochs 3]

It trains a digits original model through the CLI (`--epochs` epochs) in a scratch folder,
then times `Unlearner.forget` (the call, and its Trainer fit alone) and `result.metrics`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import CONFIGS, Clock, header, quiet_lightning, set_threads, step_args

from ps_lightning import Unlearner
from ps_lightning.data import DigitsDataModule
from ps_lightning.steps import run_step


def timed_request(unlearner: Unlearner, ids: list[int], **options: object) -> dict[str, float]:
    started = Clock.now()
    result = unlearner.forget(ids, **options)
    call = Clock.now().since(started)
    started = Clock.now()
    _ = result.metrics
    metrics = Clock.now().since(started)
    return {"call": call.wall, "call_cpu": call.cpu, "fit": result.seconds, "metrics": metrics.wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    header("Python API: first and later requests in one process (digits, LeNet5)", args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch)
        original = runs / "digits" / "original"
        run_step(
            [
                "fit",
                *step_args(CONFIGS / "digits" / "original.yaml", "original", runs, original),
                "--trainer.max_epochs",
                str(args.epochs),
                "--lr_scheduler.init_args.T_max",
                str(args.epochs),
            ]
        )
        unlearner = Unlearner.from_checkpoint(
            original / "checkpoints" / "model.ckpt", DigitsDataModule()
        )
        rows = {
            "first request, Naive PS (features, index built)": [
                timed_request(unlearner, [0, 1, 2], method="naive")
            ],
            "first PS request (calibration features)": [
                timed_request(unlearner, [0, 1, 2], method="ps", early_stop="on")
            ],
        }
        rows["later Naive PS request (15 ids)"] = []
        rows["later PS request (15 ids, early stop on)"] = []
        for repeat in range(args.repeats):
            ids = list(range(100 + 15 * repeat, 115 + 15 * repeat))
            rows["later Naive PS request (15 ids)"].append(
                timed_request(unlearner, ids, method="naive")
            )
            rows["later PS request (15 ids, early stop on)"].append(
                timed_request(unlearner, ids, method="ps", early_stop="on")
            )
    print(f"{'request':52s} {'call s':>8s} {'cpu s':>8s} {'fit s':>8s} {'metrics s':>10s}")
    for name, runs_of in rows.items():
        median = {k: statistics.median(r[k] for r in runs_of) for k in runs_of[0]}
        print(
            f"{name:52s} {median['call']:8.3f} {median['call_cpu']:8.3f} {median['fit']:8.3f} "
            f"{median['metrics']:10.3f}"
        )


if __name__ == "__main__":
    main()
