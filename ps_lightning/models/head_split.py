"""Any classifier whose last layer is an ``nn.Linear``, split into features and prototypes.

Prototype Surgery needs only the penultimate features and the final linear layer, so a network
qualifies when its output comes from an ``nn.Linear`` with one output per class. That layer is
found without per-architecture code: the module named by ``head``; else the classifier a timm
model's ``get_classifier()`` returns; else the last ``nn.Linear`` with ``num_classes`` outputs
among the network's modules (ResNet's ``fc``, EfficientNet's and ConvNeXt's ``classifier[-1]``,
ViT's ``heads.head``, Swin's ``head``, ...). It is moved out of the network, which then returns
the features: ``forward_features`` is the network itself and ``fc`` the head, the layout every
classifier here has.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


def _timm_classifier_name(network: nn.Module) -> str | None:
    """The dotted name of the linear classifier of the outermost timm model in ``network``
    (a timm model says which module it is: ``get_classifier()``)."""
    for prefix, module in network.named_modules():
        get_classifier = getattr(module, "get_classifier", None)
        if not callable(get_classifier):
            continue
        classifier = get_classifier()
        for name, candidate in module.named_modules():
            if candidate is classifier and isinstance(candidate, nn.Linear):
                return f"{prefix}.{name}" if prefix else name
        return None
    return None


def find_head(network: nn.Module, num_classes: int | None = None, head: str | None = None) -> str:
    """The dotted name of ``network``'s final linear layer (see the module docstring);
    ``num_classes`` ``None``: the last ``nn.Linear`` of any width."""
    if head is not None:
        module = dict(network.named_modules()).get(head)
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"head={head!r} names {type(module).__name__ if module else 'no module'} of "
                f"{type(network).__name__}, not an nn.Linear: name its final linear layer."
            )
        return head
    timm_head = _timm_classifier_name(network)
    if timm_head is not None:
        return timm_head
    names = [
        name
        for name, module in network.named_modules()
        if isinstance(module, nn.Linear) and num_classes in (None, module.out_features)
    ]
    if not names:
        outputs = "" if num_classes is None else f" with {num_classes} outputs"
        raise ValueError(
            f"{type(network).__name__} has no nn.Linear{outputs}: Prototype Surgery needs a "
            "linear final layer (a network whose classes come out of a convolution, like "
            "SqueezeNet, has none); name it with head=... if it has one."
        )
    return names[-1]


def _parent_and_attribute(network: nn.Module, head: str) -> tuple[nn.Module, str]:
    parent_name, _, attribute = head.rpartition(".")
    return (network.get_submodule(parent_name) if parent_name else network), attribute


class HeadSplitNet(nn.Module):
    """``network`` with its final linear layer ``head`` taken out as ``fc``: the rest of the
    network computes the features (``forward_features``), ``fc`` the logits."""

    def __init__(self, network: nn.Module, head: str) -> None:
        super().__init__()
        parent, attribute = _parent_and_attribute(network, head)
        layer: nn.Linear = getattr(parent, attribute)
        if layer.bias is None:
            # (MaxViT's head has none.) PS and its surgery operate on [W, b]: a zero bias gives
            # the same logits, and lets them.
            with_bias = nn.Linear(layer.in_features, layer.out_features)
            with_bias.weight.data.copy_(layer.weight.data)
            with_bias.bias.data.zero_()
            layer = with_bias
        self.head_name = head
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

    def joined(self) -> nn.Module:
        """A copy of the whole network with ``fc`` back in its place (the form its owner
        trained and will deploy; a bias-free head comes back with its bias)."""
        network = copy.deepcopy(self.body)
        parent, attribute = _parent_and_attribute(network, self.head_name)
        setattr(parent, attribute, copy.deepcopy(self.fc))
        return network
