"""Callbacks that keep an accelerator busy, for any LightningModule of this project:
`ChannelsLast` and `CompileNetwork` (``--trainer.callbacks+=ps_lightning.models.ChannelsLast``).

With the datamodule's ``data_on_device`` (the images stay on the GPU, batches are cut and
augmented there) they are the GPU data path that ``benchmarks/gpu_throughput.py`` measures. They
change no number beyond float rounding (tested on the CPU). On a CPU with AMX, ``ChannelsLast``
with ``--trainer.precision bf16-mixed`` trained ResNet20 about 2.3 times as fast as float32 here
(62 s a CIFAR-10 epoch against 141 s; the same script with ``--cpu`` compares the routes).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn


def _network(pl_module: L.LightningModule) -> nn.Module:
    """The network that does the arithmetic: a classifier's ``net``, or the backbone of an
    unlearning method's ``model``."""
    network = getattr(pl_module, "net", None)
    if network is None:
        network = getattr(getattr(pl_module, "model", None), "net", None)
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"{type(pl_module).__name__} has no network (net, or model.net) to speed up."
        )
    return network


class ChannelsLast(L.Callback):
    """Stores the network's 4-D weights channels-last (NHWC) when the Trainer sets it up:
    cuDNN's convolutions run on tensor cores in that layout (oneDNN's on AMX tiles), and a
    convolution with channels-last weights gives channels-last outputs, so the whole network
    follows."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        _network(pl_module).to(memory_format=torch.channels_last)


class CompileNetwork(L.Callback):
    """Compiles the network's forward with ``torch.compile`` when the Trainer sets it up, in
    place (``nn.Module.compile``), so that checkpoints keep their keys and load without it.

    Args:
        mode: ``torch.compile``'s mode (``None``, ``reduce-overhead``, ``max-autotune``).
        backend: ``torch.compile``'s backend (``inductor``; ``eager`` checks the wiring alone).
    """

    def __init__(self, mode: str | None = None, backend: str = "inductor") -> None:
        self.mode = mode
        self.backend = backend

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        network = _network(pl_module)
        network.compile(mode=self.mode, backend=self.backend)
        # The unlearning methods' and the evaluation's feature passes call it directly.
        if callable(getattr(network, "forward_features", None)):
            network.forward_features = torch.compile(
                network.forward_features, mode=self.mode, backend=self.backend
            )
