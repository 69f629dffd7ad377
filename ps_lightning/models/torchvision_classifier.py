"""Any classification network of ``torchvision.models`` as a classifier of this project.

Prototype Surgery needs only the penultimate features and the final linear layer, so a network
qualifies when its output comes from an ``nn.Linear`` with one output per class. That layer is
found without per-architecture code: the last ``nn.Linear`` with ``num_classes`` outputs among
the network's modules (ResNet's ``fc``, EfficientNet's and ConvNeXt's ``classifier[-1]``, ViT's
``heads.head``, Swin's ``head``, ...), or the module named by ``head``. It is moved out of the
network, which then returns the features: ``forward_features`` is the network itself and
``fc`` the head, the layout every classifier here has.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ps_lightning.models.classifier import ImageClassifier


def find_head(network: nn.Module, num_classes: int, head: str | None = None) -> str:
    """The dotted name of ``network``'s final linear layer (see the module docstring)."""
    if head is not None:
        module = dict(network.named_modules()).get(head)
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"head={head!r} names {type(module).__name__ if module else 'no module'} of "
                f"{type(network).__name__}, not an nn.Linear: name its final linear layer."
            )
        return head
    names = [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_classes
    ]
    if not names:
        raise ValueError(
            f"{type(network).__name__} has no nn.Linear with {num_classes} outputs: Prototype "
            "Surgery needs a linear final layer (a network whose classes come out of a "
            "convolution, like SqueezeNet, has none); name it with head=... if it has one."
        )
    return names[-1]


class HeadSplitNet(nn.Module):
    """``network`` with its final linear layer ``head`` taken out as ``fc``: the rest of the
    network computes the features (``forward_features``), ``fc`` the logits."""

    def __init__(self, network: nn.Module, head: str) -> None:
        super().__init__()
        parent_name, _, attribute = head.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        layer: nn.Linear = getattr(parent, attribute)
        if layer.bias is None:
            # (MaxViT's head has none.) PS and its surgery operate on [W, b]: a zero bias gives
            # the same logits, and lets them.
            with_bias = nn.Linear(layer.in_features, layer.out_features)
            with_bias.weight.data.copy_(layer.weight.data)
            with_bias.bias.data.zero_()
            layer = with_bias
        self.fc = layer
        setattr(parent, attribute, nn.Identity())
        self.body = network

    def forward_features(self, x: Tensor) -> Tensor:
        features = self.body(x)
        if not isinstance(features, Tensor):
            raise ValueError(
                f"{type(self.body).__name__} returns {type(features).__name__}, not a tensor (an "
                "auxiliary head in training?): build it without, e.g. --model.options "
                "'{aux_logits: false, init_weights: true}'."
            )
        return features.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


class TorchvisionClassifier(ImageClassifier):
    """A network of ``torchvision.models`` by name, with random weights (train it with
    ``ps-lightning fit``), e.g. ``--model TorchvisionClassifier --model.network efficientnet_b0``.

    Args:
        network: a name of ``torchvision.models.list_models()`` (a classification network).
        head: the dotted name of its final linear layer; ``None``: found (module docstring).
        options: further arguments of the network's builder, e.g. ``{"image_size": 32}`` for a
            ViT on 32×32 images or ``{"aux_logits": false, "init_weights": true}`` for GoogLeNet.
        num_classes: set from the data.
        in_channels: set from the data; torchvision's networks take 3 channels.
        label_smoothing: of the training loss.
    """

    def __init__(
        self,
        network: str = "resnet18",
        head: str | None = None,
        options: dict[str, Any] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        label_smoothing: float = 0.0,
    ) -> None:
        if in_channels != 3:
            raise ValueError(
                f"in_channels={in_channels}: torchvision's networks take RGB images; load the "
                "data with 3 channels (ImageFolderDataModule's channels: 3)."
            )
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        import torchvision

        hparams = self.hparams
        known = torchvision.models.list_models(module=torchvision.models)
        if hparams.network not in known:
            raise ValueError(
                f"network={hparams.network!r} is not a classification network of "
                f"torchvision.models; known: {', '.join(known)}."
            )
        network = torchvision.models.get_model(
            hparams.network,
            weights=None,
            num_classes=hparams.num_classes,
            **(hparams.options or {}),
        )
        return HeadSplitNet(network, find_head(network, hparams.num_classes, hparams.head))
