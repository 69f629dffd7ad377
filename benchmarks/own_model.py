"""Naive PS and PS on a user's own torchvision network: ResNet-18 (512-d features) and ViT-B/16
(768-d), handed over with `Unlearner.from_module`.

    .venv/bin/python benchmarks/own_model.py [--epochs 10] [--threads 2]

The embedded digits are written as a 32×32 RGB image folder (1,437 train / 360 test images) in a
scratch folder. ResNet-18 is fine-tuned there for ``--epochs`` in a plain Lightning Trainer with
`RecordInitialHead`; ViT-B/16 (86 M parameters) keeps its random weights, its head's initial
weights being its current ones, so its rows time the machinery, not a forgetting outcome. Per
network: the hand-over, the first Naive PS request (the feature pass and the surgery index), a
later Naive PS request (both reused), a PS request (the paper's defaults, 50 epochs), the rank
the cutoff rule keeps out of the feature width, and the process's peak memory so far.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from common import Clock, header, quiet_lightning, set_threads
from PIL import Image
from sklearn.datasets import load_digits

from ps_lightning import RecordInitialHead, Unlearner
from ps_lightning.data import ImageFolderDataModule
from ps_lightning.models import InitialHead


class FineTune(L.LightningModule):
    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.net = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def write_digits_folder(root: Path) -> Path:
    """sklearn's digits as PNGs: the first 1,437 train, the last 360 test (digits' own split)."""
    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "train" if index < 1437 else "test"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = (pixels * 255 / 16).astype(np.uint8)
        Image.fromarray(grey).convert("RGB").resize((32, 32)).save(folder / f"{index:04d}.png")
    return root


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(call) -> tuple[object, float]:
    started = Clock.now()
    value = call()
    return value, Clock.now().since(started).wall


def measure(name: str, model: torch.nn.Module, initial_head: InitialHead, data) -> None:
    unlearner, handover = timed(
        lambda: Unlearner.from_module(model, data=data, initial_head=initial_head)
    )
    labels = data.samples("train").tensors[1]
    class_one = torch.nonzero(labels == 1).flatten().tolist()
    first, first_s = timed(lambda: unlearner.forget(class_one[:15], method="naive"))
    later, later_s = timed(lambda: unlearner.forget(class_one[15:30], method="naive"))
    ps, ps_s = timed(lambda: unlearner.forget(class_one[:15], method="ps"))
    width = first.model.prototypes.in_features
    before = unlearner.metrics(model, class_one[:15])
    print(
        f"{name:12s} {width:5d} {handover:8.2f} {first_s:9.2f} {later_s:9.3f} {ps_s:8.2f} "
        f"{first.record['surgery_rank']!s:>6s} {first.record['surgery_rtol']:9.2e} "
        f"{before['forget_acc']:.3f}→{first.metrics['forget_acc']:.3f} "
        f"{before['retain_acc']:.3f}→{first.metrics['retain_acc']:.3f} {peak_mib():8.0f}"
    )
    assert first.record["index_built"] and not later.record["index_built"]
    del ps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    quiet_lightning()
    header("Own model through Unlearner.from_module (digits as 32x32 RGB)", args.threads)
    print(
        f"{'network':12s} {'width':>5s} {'hand s':>8s} {'first s':>9s} {'later s':>9s} "
        f"{'ps s':>8s} {'rank':>6s} {'rtol':>9s} {'forget (naive)':>13s} {'retain (naive)':>13s} "
        f"{'peak MiB':>8s}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        data = ImageFolderDataModule(
            str(write_digits_folder(Path(scratch) / "digits")), image_size=32
        )
        L.seed_everything(0, verbose=False)
        resnet, recorder = (
            FineTune(torchvision.models.resnet18(num_classes=10)),
            RecordInitialHead(),
        )
        trainer = L.Trainer(
            max_epochs=args.epochs,
            callbacks=[recorder],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=scratch,
        )
        _, fit_s = timed(lambda: trainer.fit(resnet, datamodule=data))
        print(f"(ResNet-18 fine-tuned {args.epochs} epochs in {fit_s:.1f} s)")
        assert recorder.initial_head is not None
        measure("ResNet-18", resnet, recorder.initial_head, data)
        vit = torchvision.models.vit_b_16(num_classes=10, image_size=32)
        head = vit.heads.head
        measure("ViT-B/16", vit, InitialHead("heads.head", head.weight, head.bias), data)


if __name__ == "__main__":
    main()
