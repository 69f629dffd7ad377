"""One-shot check of the CUDA paths, for a borrowed H100/H200 (about 2 minutes there).

    python benchmarks/gpu_check.py                # on the GPU machine ($OUT/gpu_report.txt)
    python benchmarks/gpu_check.py --cpu-dry-run  # the same code paths on the CPU, small sizes

Downloads nothing: it trains a tiny digits original (3 epochs, CPU) and uses random tensors.

(a) Naive PS and PS through the CLI on digits with ``--trainer.accelerator gpu --trainer.devices
    1`` give the CPU result (fc weight and bias allclose); Naive PS also with cuDNN TF32 off, to
    tell TF32 convolutions apart from a real difference.
(b) ResNet20 on CIFAR-shaped random data, bf16-mixed against 32-true, a fixed number of steps:
    samples/s of each and their ratio.
(c) The surgery index's Gram matrix built under ``--trainer.precision bf16-mixed`` equals the
    32-true one (relative Frobenius difference; both runs ``--trainer.deterministic true``), i.e.
    the extraction runs with autocast disabled; a Gram computed under bf16 autocast is printed
    for contrast.
(d) The Gram route (`accumulate_gram`, `surgery_projection`, `apply_surgery`) on the GPU at the
    TinyImageNet shape (N=100,000, d=1,024, C=200, float64).
(e) Device placement during fit: every cached tensor of `PSUnlearnModule`, the batches and the
    prototypes are on the accelerator (Naive PS and PS).
(f) The CIFAR-10 / ResNet20 and TinyImageNet-200 / VGG16 chains end to end through the
    benchmark harness (`ps-lightning bench`, the paper's request and the whole class; original
    and retrain 2 epochs in bf16-mixed, Naive PS, PS and the evaluation as configured) on image
    folders in each dataset's real on-disk layout, written here with class-coloured noise
    (CIFAR-10: 500 + 100 JPEGs per class; TinyImageNet: 50 + 10 per class, 10,000 + 2,000).
    Every method must finish, and the wall time of each chain is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from common import CONFIGS, quiet_lightning, set_threads, step_args
from PIL import Image

from ps_lightning.data import CIFAR10DataModule, DigitsDataModule
from ps_lightning.data.datasets import CIFAR10_CLASSES
from ps_lightning.data.sources import Source
from ps_lightning.files import safe_torch_load
from ps_lightning.harness.main import main as bench_main
from ps_lightning.models import ResNet20, load_classifier
from ps_lightning.prototype_surgery import PSUnlearnModule
from ps_lightning.prototype_surgery.closed_form import (
    accumulate_gram,
    apply_surgery,
    cutoff_rtol,
    gram,
    surgery_projection,
    with_constant,
)
from ps_lightning.prototype_surgery.ledger import index_path
from ps_lightning.prototype_surgery.options import NAIVE_WHOLE_CLASS
from ps_lightning.steps import run_step

DIGITS = CONFIGS / "digits"
# (c) runs with deterministic algorithms; cuBLAS needs this before its first handle.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class Report:
    """Lines printed as they come and kept for $OUT/gpu_report.txt."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.verdicts: dict[str, bool] = {}

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def verdict(self, name: str, ok: bool, detail: str) -> None:
        self.verdicts[name] = ok
        self(f"  -> {'PASS' if ok else 'FAIL'}: {detail}")


class Setup:
    def __init__(self, dry_run: bool, root: Path) -> None:
        self.dry_run = dry_run
        self.root = root
        self.runs = root / "runs"
        self.accelerator = "cpu" if dry_run else "gpu"
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.original = self.runs / "digits" / "original"
        self.ckpt = self.original / "checkpoints" / "model.ckpt"
        self.manifest = self.original / "split.json"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def fit(self, config: str, run: str, *overrides: str) -> Path:
        """A digits step through the CLI; returns its run directory."""
        args = step_args(DIGITS / config, run, self.runs, self.original)
        run_step(["fit", *args, *overrides])
        return self.runs / "digits" / run


def head_of(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    state = safe_torch_load(run_dir / "checkpoints" / "model.ckpt")["state_dict"]
    return state["net.fc.weight"].float(), state["net.fc.bias"].float()


# ---------------------------------------------------------------------- (a)
def check_cli_equivalence(s: Setup, report: Report) -> None:
    report("(a) Naive PS / PS through the CLI: accelerator vs CPU (digits)")
    on_device = ["--trainer.accelerator", s.accelerator, "--trainer.devices", "1"]
    on_cpu = ["--trainer.accelerator", "cpu"]
    no_index = ["--model.init_args.use_index", "false"]  # each run computes G on its device
    ok = True
    for name, config, extra in (("naive_ps", "naive_ps.yaml", no_index), ("ps", "ps.yaml", [])):
        w_cpu, b_cpu = head_of(s.fit(config, f"{name}_cpu", *on_cpu, *extra))
        started = time.perf_counter()
        w_dev, b_dev = head_of(s.fit(config, f"{name}_dev", *on_device, *extra))
        seconds = time.perf_counter() - started
        dw, db = (w_dev - w_cpu).abs().max().item(), (b_dev - b_cpu).abs().max().item()
        close = torch.allclose(w_dev, w_cpu, rtol=1e-4, atol=1e-5) and torch.allclose(
            b_dev, b_cpu, rtol=1e-4, atol=1e-5
        )
        ok &= close
        report(
            f"  {name:<9} step {seconds:6.2f} s   max|ΔW| {dw:.2e}  max|Δb| {db:.2e}  "
            f"allclose(rtol 1e-4, atol 1e-5): {close}"
        )
    if s.device.type == "cuda":
        tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            w_off, _ = head_of(s.fit("naive_ps.yaml", "naive_ps_notf32", *on_device, *no_index))
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        w_cpu, _ = head_of(s.runs / "digits" / "naive_ps_cpu")
        report(
            f"  naive_ps with cudnn.allow_tf32=False: max|ΔW| "
            f"{(w_off - w_cpu).abs().max().item():.2e} (default allow_tf32={tf32})"
        )
    report.verdict("a", ok, "device results equal the CPU results")


# ---------------------------------------------------------------------- (b)
class TimedResNet20(ResNet20):
    """The project's ResNet20 with the CIFAR-10 recipe's SGD and no callbacks of its own."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def configure_callbacks(self) -> list[L.Callback]:
        return []


class StepTimer(L.Callback):
    """Times the steps after ``warmup`` (CUDA-synchronised)."""

    def __init__(self, warmup: int, sync: Callable[[], None]) -> None:
        self.warmup, self.sync = warmup, sync
        self.started = self.seconds = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.sync()
            self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sync()
        self.seconds = time.perf_counter() - self.started


def random_cifar(n: int) -> Source:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return Source(images, labels, images[:1000], labels[:1000], [str(c) for c in range(10)])


def check_bf16_throughput(s: Setup, report: Report) -> None:
    batch, warmup, steps = (32, 1, 3) if s.dry_run else (512, 15, 100)
    report(
        f"(b) ResNet20 training, CIFAR-shaped random data, batch {batch}, {steps} timed steps "
        f"after {warmup}"
    )
    source = random_cifar(batch * (warmup + steps))
    cls = type("InMemoryCIFAR10", (CIFAR10DataModule,), {"load_source": lambda self: source})
    throughput = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        timer = StepTimer(warmup, s.sync)
        trainer = L.Trainer(
            accelerator=s.accelerator,
            devices=1,
            precision=precision,
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(TimedResNet20(), datamodule=cls(batch_size=batch))
        throughput[precision] = steps * batch / timer.seconds
        report(
            f"  {precision:<10} {throughput[precision]:>10,.0f} samples/s "
            f"({timer.seconds:.2f} s for {steps} steps)"
        )
    ratio = throughput["bf16-mixed"] / throughput["32-true"]
    report.verdict("b", True, f"bf16-mixed / 32-true throughput = {ratio:.2f}×")


# ---------------------------------------------------------------------- (c)
def check_bf16_gram(s: Setup, report: Report) -> None:
    report("(c) surgery index under bf16-mixed vs 32-true (both deterministic)")
    grams = {}
    for precision in ("32-true", "bf16-mixed"):
        ckpt = s.root / f"original-{precision}.ckpt"
        shutil.copy(s.ckpt, ckpt)  # its own index file beside it
        s.fit(
            "naive_ps.yaml",
            f"naive_{precision}",
            "--trainer.accelerator",
            s.accelerator,
            "--trainer.devices",
            "1",
            "--trainer.precision",
            precision,
            "--trainer.deterministic",
            "true",
            "--model.init_args.original_ckpt",
            str(ckpt),
        )
        grams[precision] = safe_torch_load(index_path(ckpt))["gram"]
    # Trainer(deterministic=True) switched deterministic algorithms on for the whole process.
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    reference = grams["32-true"]
    rel = ((grams["bf16-mixed"] - reference).norm() / reference.norm()).item()
    # For contrast: the same Gram matrix with the backbone under bf16 autocast.
    model, _ = load_classifier(str(s.ckpt))
    model.to(s.device)
    data = DigitsDataModule(split_manifest=str(s.manifest))
    leaked = None
    with torch.no_grad(), torch.autocast(s.device.type, dtype=torch.bfloat16):
        for images, _ in data.eval_dataloader("train"):
            features = model.forward_features(data.model_input(images.to(s.device)))
            leaked = accumulate_gram(leaked, with_constant(features))  # the index's [f, 1]
    assert leaked is not None
    rel_leak = ((leaked.cpu() - reference).norm() / reference.norm()).item()
    report(
        f"  relative difference bf16-mixed vs 32-true: {rel:.2e} "
        f"(a Gram under bf16 autocast would differ by {rel_leak:.2e})"
    )
    report.verdict("c", rel < 1e-10, "autocast is disabled in the extraction (target ~1e-10)")


# ---------------------------------------------------------------------- (d)
def check_gram_route(s: Setup, report: Report) -> None:
    n, d, c = (8_192, 1_024, 200) if s.dry_run else (100_000, 1_024, 200)
    batch = 4_096
    report(f"(d) Gram route on {s.device.type}: N={n:,}, d={d}, C={c}, float64")
    generator = torch.Generator(device=s.device).manual_seed(0)

    def features(rows: int) -> torch.Tensor:
        return torch.randn(rows, d, device=s.device, dtype=torch.float64, generator=generator)

    batches = [features(min(batch, n - i)).relu_() for i in range(0, min(n, 8 * batch), batch)]
    weight0 = 0.1 * torch.randn(c, d, device=s.device, dtype=torch.float64, generator=generator)
    weight = weight0 + torch.randn(c, d, device=s.device, dtype=torch.float64, generator=generator)
    accumulate_gram(None, batches[0])  # warm-up (cuBLAS handles)
    s.sync()
    started = time.perf_counter()
    full_gram = None
    for i in range(0, n, batch):  # streamed; a few resident batches are reused
        full_gram = accumulate_gram(full_gram, batches[(i // batch) % len(batches)][: n - i])
    s.sync()
    accumulate_s = time.perf_counter() - started
    assert full_gram is not None
    started = time.perf_counter()
    projection, _ = surgery_projection(
        weight, weight0, full_gram, cutoff_rtol("auto", d, torch.float64)
    )
    s.sync()
    projection_s = time.perf_counter() - started
    forget = batches[0][:1_000]
    times = []
    for _ in range(7):
        s.sync()
        started = time.perf_counter()
        apply_surgery(weight0, projection, full_gram, gram(forget))
        s.sync()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if s.device.type == "cuda" else float("nan")
    report(
        f"  accumulate_gram over N: {accumulate_s * 1e3:.1f} ms; surgery_projection (pinv "
        f"d×d): {projection_s * 1e3:.1f} ms; request k=1,000: "
        f"{statistics.median(times) * 1e3:.2f} ms; peak device memory {peak:,.0f} MiB"
    )
    report.verdict("d", bool(torch.isfinite(projection).all()), "Gram route ran on the device")


# ---------------------------------------------------------------------- (e)
class DeviceProbe(L.Callback):
    """Records the device of every cached tensor, batch and prototype during fit."""

    def __init__(self) -> None:
        self.devices: dict[str, str] = {}

    def record(self, module: PSUnlearnModule) -> None:
        for split, tensors in module.cache.items():
            for key, tensor in tensors.items():
                self.devices[f"cache[{split}][{key}]"] = str(tensor.device)
        self.devices["prototypes.weight"] = str(module.model.prototypes.weight.device)
        self.devices["prototypes.bias"] = str(module.model.prototypes.bias.device)
        self.devices["initial_prototypes"] = str(module.model.initial_prototypes.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        for i, tensor in enumerate(batch):
            self.devices[f"batch[{i}]"] = str(tensor.device)
        self.record(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Not on_fit_end: Lightning's teardown has moved the module back to the CPU by then.
        self.record(pl_module)


class ProbedPS(PSUnlearnModule):
    """Records placement right after the caches are built (naive surgery runs no epoch, so no
    train hook follows, and on_fit_end comes after teardown moved the module to the CPU)."""

    probe: DeviceProbe

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.probe.record(self)


def check_devices(s: Setup, report: Report) -> None:
    report(f"(e) device placement during fit (expected: {s.device.type})")
    ok = True
    for method, extra in (("naive", {}), ("ps", {"epochs": 2, "early_stop": "on"})):
        probe = DeviceProbe()
        module = ProbedPS(str(s.ckpt), method=method, num_classes=10, in_channels=1, **extra)
        module.probe = probe
        trainer = L.Trainer(
            accelerator=s.accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(s.root / f"probe-{method}"),
            callbacks=[probe],
        )
        trainer.fit(module, datamodule=DigitsDataModule(split_manifest=str(s.manifest)))
        wrong = {k: v for k, v in probe.devices.items() if not v.startswith(s.device.type)}
        ok &= not wrong and bool(probe.devices)
        placed = sorted({v for v in probe.devices.values()})
        report(
            f"  {method:<5} {len(probe.devices)} tensors on {placed}"
            + (f"; NOT on {s.device.type}: {wrong}" if wrong else "")
        )
        report(f"        {', '.join(sorted(probe.devices))}")
    report.verdict("e", ok, f"everything on {s.device.type}")


# ---------------------------------------------------------------------- (f)
def write_images(files: list[tuple[Path, int]], size: int, classes: int) -> None:
    """JPEGs of noise around a colour per class: a network separates them within an epoch."""
    generator = np.random.default_rng(0)
    colours = generator.integers(40, 216, (classes, 3))
    for path, label in files:
        noise = generator.integers(-40, 41, (size, size, 3))
        pixels = np.clip(colours[label] + noise, 0, 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=75)


def cifar10_tree(root: Path, train: int, test: int) -> Path:
    """The CIFAR-10 JPEG tree's layout: ``train|test/<class>/NNNN.jpg``."""
    counts = {"train": train, "test": test}
    write_images(
        [
            (root / split / name / f"{i:04d}.jpg", label)
            for split, count in counts.items()
            for label, name in enumerate(CIFAR10_CLASSES)
            for i in range(count)
        ],
        32,
        len(CIFAR10_CLASSES),
    )
    return root


def tinyimagenet_tree(data_dir: Path, train: int, val: int) -> Path:
    """The official ``tiny-imagenet-200`` layout: wnids.txt, ``train/<wnid>/images/*.JPEG``,
    ``val/images`` labelled by ``val/val_annotations.txt``."""
    root = data_dir / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    files = [
        (root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", label)
        for label, wnid in enumerate(wnids)
        for i in range(train)
    ]
    held_out = [(f"val_{label * val + i}.JPEG", label) for label in range(200) for i in range(val)]
    files += [(root / "val" / "images" / name, label) for name, label in held_out]
    write_images(files, 64, len(wnids))
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnids[label]}\t0\t0\t63\t63\n" for name, label in held_out)
    )
    return data_dir


def check_paper_chains(s: Setup, report: Report) -> None:
    report("(f) CIFAR-10 and TinyImageNet chains through the benchmark harness")
    # Images per class (train, test): the paper's request needs 10 of class 1 to draw 1.
    sizes = {"cifar10": (500, 100), "tinyimagenet": (50, 10)}
    if s.dry_run:
        sizes = {"cifar10": (20, 5), "tinyimagenet": (10, 2)}
    trees = {
        "cifar10": lambda: cifar10_tree(s.root / "cifar10-tree", *sizes["cifar10"]),
        "tinyimagenet": lambda: tinyimagenet_tree(s.root / "tiny-data", *sizes["tinyimagenet"]),
    }
    training = ["--training-arg=--trainer.precision=bf16-mixed"]
    if s.dry_run:  # VGG16 at 64x64 takes seconds a step on a CPU: the wiring alone is checked
        training.append("--training-arg=--trainer.limit_train_batches=2")
    else:
        training.append("--training-arg=--trainer.callbacks+=ps_lightning.models.ChannelsLast")
    ok = True
    for dataset, write in trees.items():
        started = time.perf_counter()
        data_dir = write()
        written = time.perf_counter() - started
        out = s.root / f"{dataset}-tables"
        bench_main(
            [
                "--dataset", dataset, "--seeds", "3", "--scenarios", "subclass", "wholeclass",
                "--methods", "naive_ps", "ps", "--max-epochs", "1" if s.dry_run else "2",
                "--runs-dir", str(s.root / "bench"), "--configs", str(CONFIGS), "--out", str(out),
                f"--trainer-arg=--trainer.accelerator={s.accelerator}",
                f"--trainer-arg=--data.init_args.data_dir={data_dir}",
                *training,
            ]
        )  # fmt: skip
        failed = {}
        for scenario in ("subclass", "wholeclass"):
            table = json.loads((out / f"{dataset}-{scenario}.json").read_text())
            failed.update(
                {
                    f"{scenario} {k}": v
                    for run in table["per_seed"]
                    for k, v in run["failed"].items()
                }
            )
        # What must happen: Naive PS refuses the whole class (PS forgets it).
        refusal = failed.pop("wholeclass naive_ps", "")
        if NAIVE_WHOLE_CLASS not in refusal:
            failed["wholeclass naive_ps"] = refusal or "ran: it should refuse a whole class"
        ok &= not failed
        chain = time.perf_counter() - started - written
        report(
            f"  {dataset:<12} images written in {written:5.1f} s, chain {chain:6.1f} s, "
            f"failed: {failed or 'none'}"
        )
    report.verdict("f", ok, "every step of both chains finished" if ok else "a step failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="same paths on CPU, small")
    args = parser.parse_args()
    quiet_lightning()
    if args.cpu_dry_run:
        set_threads(1)  # two busy threads on a shared 2-core machine slow each other 10×
    report = Report()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU machine, or use --cpu-dry-run")
    device = torch.cuda.get_device_name(0) if not args.cpu_dry_run else "CPU (dry run)"
    report(
        f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | {device} | torch "
        f"{torch.__version__} | lightning {L.__version__} | cuda {torch.version.cuda} | "
        f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32} | "
        f"matmul precision {torch.get_float32_matmul_precision()}"
    )
    started = time.perf_counter()
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # nothing is written into the repository
        try:
            setup = Setup(args.cpu_dry_run, Path(tmp))
            setup.fit(
                "original.yaml",
                "original",
                "--trainer.max_epochs",
                "3",
                "--lr_scheduler.init_args.T_max",
                "3",
                "--trainer.accelerator",
                "cpu",
            )
            report(
                f"tiny digits original trained on the CPU (3 epochs) in "
                f"{time.perf_counter() - started:.1f} s"
            )
            for name, check in (
                ("a", check_cli_equivalence),
                ("b", check_bf16_throughput),
                ("c", check_bf16_gram),
                ("d", check_gram_route),
                ("e", check_devices),
                ("f", check_paper_chains),
            ):
                try:
                    check(setup, report)
                except Exception as error:  # one broken check must not hide the others
                    report.verdict(name, False, f"{type(error).__name__}: {error}")
                    report("\n".join("    " + x for x in traceback.format_exc().splitlines()[-8:]))
        finally:
            os.chdir(cwd)
    summary = " ".join(f"{k}:{'PASS' if v else 'FAIL'}" for k, v in report.verdicts.items())
    report(f"# summary {summary} | total {time.perf_counter() - started:.0f} s")
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "gpu_report.txt"
        path.write_text("\n".join(report.lines) + "\n")
        print(f"report written to {path}")


if __name__ == "__main__":
    main()
