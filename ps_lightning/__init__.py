"""ps-lightning: machine unlearning with Prototype Surgery on PyTorch Lightning.

The Python API (`ps_lightning.api`): ``from ps_lightning import Unlearner``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ForgetResult", "Unlearner"]


def __getattr__(name: str) -> Any:
    # Imported on first use: every submodule import runs this file first, and
    # `python -m ps_lightning.prototype_surgery.ledger` must not find its module imported already.
    if name in __all__:
        return getattr(importlib.import_module("ps_lightning.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
