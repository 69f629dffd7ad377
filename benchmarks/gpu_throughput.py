"""ResNet20 training throughput on CIFAR-shaped data, route by route, on a borrowed GPU or here.

    python benchmarks/gpu_throughput.py                # on the GPU machine (about 3 minutes)
    python benchmarks/gpu_throughput.py --cpu          # on this CPU, batch 128 (about 2 minutes)
    python benchmarks/gpu_throughput.py --cpu-dry-run  # the same routes on the CPU, small

On a CPU, bf16 is fast only where the CPU has bf16 arithmetic (AMX or AVX512-BF16: ``lscpu``
flags ``amx_bf16``, ``avx512_bf16``); elsewhere it is emulated and slower than float32.

Every route trains the project's `ResNet20` through a Lightning Trainer on the same random
CIFAR-shaped uint8 data (50,000 images, the datamodule's crop and flip on the device), for a
fixed number of timed steps after a warm-up, and prints samples/s:

1. 32-true, images on the host (each batch copied to the device);
2. bf16-mixed, images on the host;
3. bf16-mixed, ``data_on_device`` (the images stay on the GPU; batches cut there);
4. as 3, with `ChannelsLast`;
5. as 4, with `CompileNetwork` (``torch.compile``, inductor).

The last lines give each route's speed-up over route 1 and its ratio to a published fast
CIFAR-10 trainer: airbench94 (Keller Jordan, github.com/KellerJordan/cifar10-airbench: 94.01% in
3.83 s on one A100, 9.9 epochs of 50,000 images, about 129,000 training samples/s, its network
doing about three times ResNet20's arithmetic per sample). The ratio compares our trainer's
speed on this GPU with that trainer's on its own, not two equal workloads. Never run in CI.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning as L
import torch
from common import quiet_lightning, set_threads
from gpu_check import StepTimer, TimedResNet20, random_cifar

from ps_lightning.data import CIFAR10DataModule
from ps_lightning.data.sources import Source
from ps_lightning.models import ChannelsLast, CompileNetwork

AIRBENCH94_SAMPLES_PER_SECOND = 50_000 * 9.9 / 3.83  # published, one A100
ROUTES: dict[str, dict[str, Any]] = {
    "1 fp32, host data": {"precision": "32-true"},
    "2 bf16, host data": {"precision": "bf16-mixed"},
    "3 bf16, data on device": {"precision": "bf16-mixed", "on_device": True},
    "4 + channels_last": {"precision": "bf16-mixed", "on_device": True, "channels_last": True},
    "5 + torch.compile": {
        "precision": "bf16-mixed",
        "on_device": True,
        "channels_last": True,
        "compile": True,
    },
}


def samples_per_second(
    route: dict[str, Any], source: Source, batch: int, warmup: int, steps: int, gpu: bool
) -> float:
    cls = type("InMemoryCIFAR10", (CIFAR10DataModule,), {"load_source": lambda self: source})
    data = cls(batch_size=batch, data_on_device=route.get("on_device", False))
    timer = StepTimer(warmup, torch.cuda.synchronize if gpu else lambda: None)
    callbacks: list[L.Callback] = [timer]
    if route.get("channels_last"):
        callbacks.append(ChannelsLast())
    if route.get("compile"):
        callbacks.append(CompileNetwork())
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision=route["precision"],
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(TimedResNet20(), datamodule=data)
    return steps * batch / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the routes on this CPU, batch 128")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the routes on the CPU, small")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    gpu = not (args.cpu or args.cpu_dry_run)
    if gpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU machine, or pass --cpu or --cpu-dry-run")
    set_threads(2)
    quiet_lightning()
    batch, warmup, steps = (args.batch, 30, args.steps)
    device = torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} threads"
    if args.cpu:  # the CIFAR-10 recipe's batch; a CPU step takes a tenth of a second or more
        batch, warmup, steps = 128, 5, 40
    if args.cpu_dry_run:
        batch, warmup, steps = 16, 2, 3
        device = "CPU (dry run: timings meaningless)"
    source = random_cifar(50_000 if gpu else batch * (warmup + steps))
    print(f"# ResNet20, batch {batch}, {steps} timed steps after {warmup}; {device}")
    measured = {}
    for name, route in ROUTES.items():
        if route.get("compile") and not gpu:
            print(f"{name:<26} skipped on the CPU (inductor compiles for minutes)")
            continue
        measured[name] = samples_per_second(route, source, batch, warmup, steps, gpu)
        print(f"{name:<26} {measured[name]:>10,.0f} samples/s")
    baseline = measured["1 fp32, host data"]
    for name, value in measured.items():
        print(
            f"ratio {name:<26} {value / baseline:5.2f}× route 1, "
            f"{value / AIRBENCH94_SAMPLES_PER_SECOND:5.3f}× airbench94 (A100, published)"
        )


if __name__ == "__main__":
    main()
