"""Prototype Surgery (docs/design.md §2–3): the Lightning module (`ps_module`), the closed-form
surgery (`closed_form`) and the soft labels (`soft_labels`) over plain tensors, the surgery
ledger (`ledger`) and its lease across hosts (`lease`), Naive PS on the running module with its
ledger transaction and cumulative requests (`naive_surgery`), the early stop (`early_stop`),
and the threads of head-sized work (`threads`)."""

from __future__ import annotations

from typing import Any

__all__ = ["PSUnlearnModule"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m ps_lightning.prototype_surgery.ledger` runs the
    # ledger module without the package having imported it already (through the module).
    if name == "PSUnlearnModule":
        from ps_lightning.prototype_surgery.ps_module import PSUnlearnModule

        return PSUnlearnModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
