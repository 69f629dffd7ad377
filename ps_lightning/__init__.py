"""ps-lightning: machine unlearning with Prototype Surgery on PyTorch Lightning.

The Python API (`ps_lightning.api`): ``from ps_lightning import Unlearner``; for a model trained
in the user's own Lightning project, ``from ps_lightning import RecordInitialHead``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module it lives in.
_HOMES = {
    "ForgetResult": "ps_lightning.api",
    "Unlearner": "ps_lightning.api",
    "RecordInitialHead": "ps_lightning.models.initial_head",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    # Imported on first use: every submodule import runs this file first, and
    # `python -m ps_lightning.prototype_surgery.ledger` must not find its module imported already.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
