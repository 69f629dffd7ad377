"""A user's own network, trained anywhere, as a classifier of this project.

ps-lightning rebuilds its own classifiers from a checkpoint by registry name and plain init
arguments, never by unpickling code. A user's network (their own ``nn.Module`` or
``LightningModule``, a torchvision or timm model fine-tuned in their project) cannot be rebuilt
that way, so it is never read from a file: the user hands the live module over, and a
checkpoint of it (`UserNetwork`) holds only its weights and the name of its class. Loading such
a checkpoint needs the module again (`supplying_network`); `Unlearner.from_module` does both.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ps_lightning.files import atomic_torch_save, safe_torch_load
from ps_lightning.models.classifier import ImageClassifier, classifier_record
from ps_lightning.models.head_split import HeadSplitNet, find_head
from ps_lightning.models.initial_head import InitialHead

if TYPE_CHECKING:
    from ps_lightning.data.datamodule import UnlearningDataModule

# The live network a `UserNetwork` is built around: given by its owner, never read from a file.
_SUPPLIED_NETWORK: ContextVar[nn.Module | None] = ContextVar("supplied_network", default=None)


@contextlib.contextmanager
def supplying_network(network: nn.Module) -> Iterator[None]:
    """Within this block, a `UserNetwork` (built or loaded from a checkpoint) is ``network``."""
    token = _SUPPLIED_NETWORK.set(network)
    try:
        yield
    finally:
        _SUPPLIED_NETWORK.reset(token)


def class_name(network: nn.Module) -> str:
    return f"{type(network).__module__}.{type(network).__qualname__}"


class UserNetwork(ImageClassifier):
    """The supplied network (`supplying_network`) with its final linear layer ``head`` split off.

    Args:
        network_class: the class of the network, ``module.QualifiedName``; a checkpoint is
            loaded only around a network of this class.
        head: the dotted name of its final linear layer.
        initial_head_recorded: whether ``initial_prototypes`` / ``initial_bias`` hold the
            head's weights before training (`RecordInitialHead`); Naive PS needs them.
        num_classes: of the data.
        in_channels: of the data.
        label_smoothing: unused (the user trained the network); kept for the common base.
    """

    rebuilt_by_name = False

    def __init__(
        self,
        network_class: str,
        head: str,
        initial_head_recorded: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(num_classes, in_channels, label_smoothing)

    @property
    def has_initial_head(self) -> bool:
        return bool(self.hparams.initial_head_recorded)

    def build_network(self) -> nn.Module:
        network = _SUPPLIED_NETWORK.get()
        expected = self.hparams.network_class
        if network is None:
            raise ValueError(
                f"this model is the user's own {expected}, which ps-lightning never rebuilds "
                "from a file: load it around your module, with Unlearner.from_module(model, "
                "...) or within ps_lightning.models.supplying_network(model)."
            )
        if class_name(network) != expected:
            raise ValueError(
                f"the checkpoint holds a {expected}, but the network supplied is a "
                f"{class_name(network)}: supply the module the checkpoint was made from."
            )
        # A copy: the split replaces the head by an identity, and the user's module stays whole.
        return HeadSplitNet(copy.deepcopy(network), self.hparams.head)


def wrap_user_network(
    network: nn.Module,
    num_classes: int,
    in_channels: int,
    head: str | None = None,
    initial_head: InitialHead | None = None,
) -> UserNetwork:
    """``network`` (weights as trained) as a `UserNetwork`, carrying ``initial_head`` if given."""
    head_name = find_head(network, num_classes, head)
    with supplying_network(network):
        classifier = UserNetwork(
            class_name(network),
            head_name,
            initial_head_recorded=initial_head is not None,
            num_classes=num_classes,
            in_channels=in_channels,
        )
    prototypes = classifier.prototypes
    if initial_head is None:
        # Not known: zeros, never read (Naive PS refuses a model without them).
        classifier.initial_prototypes.zero_()
        classifier.initial_bias.zero_()
        return classifier
    if initial_head.weight.shape != prototypes.weight.shape:
        raise ValueError(
            f"the initial head recorded on '{initial_head.head}' has shape "
            f"{tuple(initial_head.weight.shape)}, but the head '{head_name}' of this network has "
            f"{tuple(prototypes.weight.shape)}: pass the record of this model's training."
        )
    classifier.initial_prototypes.copy_(initial_head.weight)
    classifier.initial_bias.copy_(initial_head.bias)
    return classifier


def check_head_split(network: nn.Module, classifier: ImageClassifier, images: torch.Tensor) -> None:
    """Refuse a split whose prototypes on the features do not give the network's own outputs
    (the head is not the network's last operation: something follows it)."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            expected = network(images)
            split = classifier.eval()(images)
    finally:
        network.train(was_training)
    if not isinstance(expected, torch.Tensor) or expected.shape != split.shape:
        raise ValueError(
            f"{type(network).__name__} does not return one logit per class for a batch of "
            "images: ps-lightning needs a classifier whose forward returns the logits."
        )
    if not torch.allclose(expected, split, rtol=1e-4, atol=1e-4 * float(expected.abs().max())):
        raise ValueError(
            f"the head '{classifier.hparams.head}' of {type(network).__name__} is not its last "
            "operation (its outputs differ from the head's on the features): name the final "
            "linear layer with head=..., one whose output is the network's."
        )


def save_original(classifier: UserNetwork, data: UnlearningDataModule, path: Path) -> None:
    """Write the user's model as a ps-lightning original checkpoint at ``path``; one there
    already is kept if it holds the same model (its ledger goes on), refused otherwise."""
    data_record = {"split_manifest": data.state_dict()["split_manifest"], "train_on": "full"}
    checkpoint = {
        "state_dict": classifier.state_dict(),
        "ps_lightning": classifier_record(classifier, data_record),
    }
    if path.exists():
        difference = _difference(safe_torch_load(path), checkpoint)
        if difference is not None:
            raise FileExistsError(
                f"'{path}' holds {difference}: pass another workdir, or delete that folder, its "
                "deletion ledger with it."
            )
        return
    atomic_torch_save(path, checkpoint)


def _difference(saved: object, checkpoint: dict) -> str | None:
    """What the saved original differs in from ``checkpoint``, or ``None`` (the same)."""
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    ours = checkpoint["state_dict"]
    if not isinstance(state, dict) or state.keys() != ours.keys():
        return "another model"
    differing = [k for k, v in ours.items() if not torch.equal(state[k], v)]
    if any(not k.startswith("initial_") for k in differing):
        return "another model"
    record, our_record = saved.get("ps_lightning") or {}, checkpoint["ps_lightning"]
    if record.get("data") != our_record["data"]:
        return "this model, for other data"
    if differing or record != our_record:
        return "this model with another initial head: pass the initial_head given before"
    return None
