"""Callbacks that keep an accelerator busy, for any LightningModule of this project:
`ChannelsLast` and `CompileNetwork` (``--trainer.callbacks+=ps_lightning.models.ChannelsLast``);
and `cpu_feature_pass`, how the unlearning methods' feature passes run on a CPU.

With the datamodule's ``data_on_device`` (the images stay on the GPU, batches are cut and
augmented there) they are the GPU data path that ``benchmarks/gpu_throughput.py`` measures. They
change no number beyond float rounding (tested on the CPU). On a CPU with AMX, ``ChannelsLast``
with ``--trainer.precision bf16-mixed`` trained ResNet20 about 2.3 times as fast as float32 here
(62 s a CIFAR-10 epoch against 141 s; the same script with ``--cpu`` compares the routes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torch.nn.utils.fusion import fuse_conv_bn_weights

# A CPU feature pass runs in pieces of this many images: on the 2-core Xeon of
# benchmarks/README.md, one thread, a 1,024-image batch outgrows the caches (54,000 Fashion-MNIST
# images through LeNet5's convolutions: 4.4 s in batches of 1,024, 2.9 s in pieces of 256, 2.1 s
# with channels-last weights as well; ResNet20 1.7 and 2.3 times as fast).
# benchmarks/block_speed.py measures the pass.
CPU_PASS_ROWS = 256
# Below this many channels a channels-last max pooling runs as a strided maximum over its
# window: the CPU kernel vectorises over channels, and LeNet5's 6 left it 4 times as slow
# (256 images of 6×28×28: 4.0 ms against 1.1 ms; at 16 channels and more the kernel is as fast
# or faster). benchmarks/block_speed.py measures the pass.
FEW_CHANNELS = 16


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


def _convolution_weights(network: nn.Module) -> list[torch.Tensor]:
    return [p for p in network.parameters() if p.dim() == 4]


def window_max(inputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``max_pool2d(inputs, size)`` (stride = window, no padding, rows and columns beyond the
    last whole window dropped) as the maximum of the window's strided slices: equal to it,
    NaN included, and faster on a CPU where the channels are few (`FEW_CHANNELS`)."""
    rows, cols = size
    height = inputs.shape[-2] // rows * rows
    width = inputs.shape[-1] // cols * cols
    slices = [inputs[..., i:height:rows, j:width:cols] for i in range(rows) for j in range(cols)]
    result = slices[0]
    for part in slices[1:]:
        result = torch.maximum(result, part)
    return result


def _unhooked(layer: nn.Module) -> bool:
    """Whether ``layer``'s forward can be replaced unseen: not replaced already, and no hook
    of the user's watches its inputs or outputs."""
    return "forward" not in vars(layer) and not (layer._forward_hooks or layer._forward_pre_hooks)


def _pools_by_window(network: nn.Module) -> list[nn.MaxPool2d]:
    """``network``'s max poolings whose stride is their window (no padding, dilation, ceil mode
    or indices): those `window_max` computes."""
    return [
        layer
        for layer in network.modules()
        if type(layer) is nn.MaxPool2d
        and _unhooked(layer)
        and _pair(layer.stride or layer.kernel_size) == _pair(layer.kernel_size)
        and _pair(layer.padding) == (0, 0)
        and _pair(layer.dilation) == (1, 1)
        and not layer.ceil_mode
        and not layer.return_indices
    ]


def _few_channel_window_max(layer: nn.MaxPool2d) -> Callable[[torch.Tensor], torch.Tensor]:
    size = _pair(layer.kernel_size)
    pool = type(layer).forward.__get__(layer)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() >= 3 and inputs.shape[-3] < FEW_CHANNELS:
            return window_max(inputs, size)
        return pool(inputs)

    return forward


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm`` after ``conv`` is one affine map of the convolution's output: a BatchNorm
    using its running statistics, neither layer watched by a hook of the user's."""
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and not norm.training
        and norm.running_mean is not None
        and norm.running_var is not None
        and _unhooked(conv)
        and _unhooked(norm)
    )


def _folded_convolution(
    conv: nn.Conv2d, norm: nn.BatchNorm2d
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The convolution with ``norm`` folded into its weight and bias, in the weight's layout."""
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
        )
        weight = torch.empty_like(conv.weight).copy_(weight)
    return lambda inputs: conv._conv_forward(inputs, weight, bias.detach())


def _folded_sequential(container: nn.Sequential) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``container``'s forward with each convolution it feeds straight into a foldable BatchNorm
    run as one folded convolution, or ``None`` where it has no such pair. The fold lives in the
    container's forward, not in its layers: a slice of it (a trunk cut between the two) or a
    layer it shares with another part of the network runs unfolded."""
    layers = list(container)
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    index = 0
    while index < len(layers):
        layer = layers[index]
        after = layers[index + 1] if index + 1 < len(layers) else None
        if after is not None and _foldable(layer, after):
            steps.append(_folded_convolution(layer, after))
            index += 2
        else:
            steps.append(layer)
            index += 1
    if len(steps) == len(layers):
        return None

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        for step in steps:
            inputs = step(inputs)
        return inputs

    return forward


def _inference_forwards(network: nn.Module) -> dict[nn.Module, Callable]:
    """The forwards a CPU inference pass gives ``network``'s modules for its duration:
    few-channel max poolings as `window_max`, and each plain `nn.Sequential` holding a
    convolution followed by a BatchNorm as `_folded_sequential` (LeNet5's BatchNorms took a tenth
    of the pass)."""
    forwards: dict[nn.Module, Callable] = {
        layer: _few_channel_window_max(layer) for layer in _pools_by_window(network)
    }
    for container in network.modules():
        if type(container) is nn.Sequential and _unhooked(container):
            folded = _folded_sequential(container)
            if folded is not None:
                forwards[container] = folded
    return forwards


@contextmanager
def cpu_feature_pass(
    network: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """``forward`` (a part of ``network``) as a CPU feature pass runs it fastest, for inference
    only: in pieces of `CPU_PASS_ROWS` images, with ``network``'s convolution weights
    channels-last for the duration and the layer forwards of `_inference_forwards` (both
    restored afterwards, so a checkpoint keeps its layout and its layers; a network already
    channels-last is left as it is). On any other device, and for a network in training mode
    (pieces would change its BatchNorm's batch statistics), ``forward`` is returned
    unchanged."""
    if device.type != "cpu" or network.training:
        yield forward
        return
    weights = _convolution_weights(network)
    # A weight laid out otherwise (channels-last already) is the user's choice.
    convert = bool(weights) and all(w.is_contiguous() for w in weights)
    forwards: dict[nn.Module, Callable] = {}
    try:
        if convert:
            network.to(memory_format=torch.channels_last)
        forwards = _inference_forwards(network)  # after the layout: folded weights follow it
        for layer, layer_forward in forwards.items():
            layer.forward = layer_forward
        # Contiguous again: a channels-last feature map would be copied by every later view.
        yield lambda inputs: torch.cat(
            [forward(piece) for piece in inputs.split(CPU_PASS_ROWS)]
        ).contiguous()
    finally:
        for layer in forwards:
            vars(layer).pop("forward", None)
        if convert:
            network.to(memory_format=torch.contiguous_format)
