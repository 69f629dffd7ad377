"""Any classification network of ``torchvision.models`` as a classifier of this project, its
final linear layer split off as the prototypes (`ps_lightning.models.head_split`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ps_lightning.models.classifier import ImageClassifier
from ps_lightning.models.head_split import HeadSplitNet, find_head


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
