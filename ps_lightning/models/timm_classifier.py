"""Any classification model of timm (the optional extra ``pip install 'ps-lightning[timm]'``) as a
classifier of this project, its classifier (``get_classifier()``) split off as the prototypes
(`ps_lightning.models.head_split`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ps_lightning.models.classifier import ImageClassifier
from ps_lightning.models.head_split import HeadSplitNet, find_head


class TimmClassifier(ImageClassifier):
    """A model of timm by name, with random weights (train it with ``ps-lightning fit``), e.g.
    ``--model TimmClassifier --model.network resnet18``; timm takes any number of input
    channels, so greyscale data work too.

    Args:
        network: a name of ``timm.list_models()``.
        head: the dotted name of its final linear layer; ``None``: ``get_classifier()``.
        options: further arguments of ``timm.create_model``, e.g. ``{"img_size": 32}`` for a
            ViT on 32×32 images.
        num_classes: set from the data.
        in_channels: set from the data.
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
        super().__init__(num_classes, in_channels, label_smoothing)

    def build_network(self) -> nn.Module:
        try:
            import timm
        except ImportError as error:
            raise ImportError(
                "TimmClassifier needs timm, the optional extra: pip install 'ps-lightning[timm]'."
            ) from error
        hparams = self.hparams
        if not timm.is_model(hparams.network):
            raise ValueError(
                f"network={hparams.network!r} is not a model of timm; see timm.list_models()."
            )
        network = timm.create_model(
            hparams.network,
            pretrained=False,
            num_classes=hparams.num_classes,
            in_chans=hparams.in_channels,
            **(hparams.options or {}),
        )
        return HeadSplitNet(network, find_head(network, hparams.num_classes, hparams.head))
