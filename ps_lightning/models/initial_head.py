"""The head's initial weights for a model trained outside this project.

Naive Prototype Surgery computes the unlearned head from the initial prototypes ``W0`` (and the
initial bias ``b0``): the head's weights before the first training step. A ps-lightning
classifier keeps them in every checkpoint; a model trained in the user's own Lightning project
does not, unless `RecordInitialHead` is among its Trainer's callbacks:

    recorder = RecordInitialHead()
    L.Trainer(callbacks=[recorder]).fit(model, ...)
    Unlearner.from_module(model, data=..., initial_head=recorder.initial_head)

It records the head when fit starts, and stores it in every checkpoint the Trainer writes (as
Lightning stores any callback's state), so a resumed fit keeps the first one, and
`RecordInitialHead.read(path)` takes it back out of a checkpoint file. Without it, Naive PS
refuses in one line and PS works (PS needs no initial weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from ps_lightning.files import safe_torch_load
from ps_lightning.models.head_split import find_head


@dataclass(frozen=True)
class InitialHead:
    """The final layer's weights before training: ``head`` its dotted name in the module it was
    recorded on, ``weight`` ``W0`` (classes × features) and ``bias`` ``b0`` (zeros for a
    bias-free layer)."""

    head: str
    weight: torch.Tensor
    bias: torch.Tensor


class RecordInitialHead(L.Callback):
    """Records the LightningModule's final linear layer when fit starts (see the module
    docstring); ``head`` names it (``None``: found as ps-lightning finds heads, the last
    ``nn.Linear`` of ``num_classes`` outputs, or of any width without ``num_classes``)."""

    def __init__(self, head: str | None = None, num_classes: int | None = None) -> None:
        self.head = head
        self.num_classes = num_classes
        self.initial_head: InitialHead | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the first step, after `configure_model` built the module and after a resumed
        # fit restored the head recorded at its own start (which is kept).
        if self.initial_head is not None:
            return
        if trainer.ckpt_path is not None:
            raise ValueError(
                f"the fit resumes from '{trainer.ckpt_path}', which holds no initial head: its "
                "head is not the one before training. Record it from the first fit on."
            )
        name = find_head(pl_module, self.num_classes, self.head)
        layer: nn.Linear = pl_module.get_submodule(name)
        weight = layer.weight.detach().cpu().clone()
        bias = (
            layer.bias.detach().cpu().clone()
            if layer.bias is not None
            else torch.zeros(layer.out_features, dtype=weight.dtype)
        )
        self.initial_head = InitialHead(name, weight, bias)

    def state_dict(self) -> dict[str, Any]:
        if self.initial_head is None:
            return {}
        recorded = self.initial_head
        return {"head": recorded.head, "weight": recorded.weight, "bias": recorded.bias}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.initial_head = _initial_head_of(state_dict, "the resumed checkpoint")

    @classmethod
    def read(cls, path: str | os.PathLike) -> InitialHead:
        """The initial head a `RecordInitialHead` stored in the Lightning checkpoint ``path``
        (read with ``weights_only=True``)."""
        checkpoint = safe_torch_load(path)
        states = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
        state = (states or {}).get(cls.__qualname__)
        if not state:
            raise ValueError(
                f"'{path}' holds no initial head: it was not written by a Trainer with "
                "ps_lightning.RecordInitialHead among its callbacks. Train with it for Naive PS, "
                "or unlearn with method='ps', which needs no initial weights."
            )
        return _initial_head_of(state, f"'{path}'")


def _initial_head_of(state: dict[str, Any], source: str) -> InitialHead:
    weight, bias, head = state.get("weight"), state.get("bias"), state.get("head")
    if not (
        isinstance(head, str)
        and isinstance(weight, torch.Tensor)
        and isinstance(bias, torch.Tensor)
        and weight.dim() == 2
        and bias.shape == weight.shape[:1]
    ):
        raise ValueError(f"{source} holds a damaged initial-head record: record it again.")
    return InitialHead(head, weight, bias)
