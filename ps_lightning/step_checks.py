"""Refusals of a step before anything is built: a subcommand with nothing to run for its module,
and an optimizer LightningCLI would put in place of an unlearning method's own."""

from __future__ import annotations

import importlib
from typing import Any

import lightning as L

from ps_lightning.unlearning.unlearning_module import UnlearningModule


def _configured_class(config: Any) -> type | None:
    """The class a parsed ``model`` / ``data`` entry names (its ``class_path``), if any."""
    class_path = str(config.get("class_path") or "") if hasattr(config, "get") else ""
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        return None
    found = getattr(importlib.import_module(module_name), name, None)
    return found if isinstance(found, type) else None


def refuse_foreign_optimizer(model: Any, optimizer: Any, lr_scheduler: Any) -> None:
    """An unlearning method owns its optimizer (its lr, epochs and schedule are its options):
    LightningCLI's ``--optimizer`` / ``--lr_scheduler`` would silently replace it, so they are
    refused for one, naming the method's own options."""
    model_class = _configured_class(model)
    if model_class is None or (optimizer is None and lr_scheduler is None):
        return
    name = model_class.__name__
    if issubclass(model_class, UnlearningModule):
        raise ValueError(
            f"--optimizer / --lr_scheduler: {name} owns its optimizer, which they would replace "
            f"unrecorded; set its own options instead (--model.init_args.lr, ...; "
            f"`--model.help {name}` lists them)."
        )


# What each LightningCLI subcommand runs: one of the module's hooks (predict: its own
# predict_step, or Lightning's, which calls forward) and, for the loops that take their data
# from the datamodule alone, its loader (fit: a method may make its own, `train_dataloader`).
SUBCOMMAND_NEEDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "fit": (("training_step",), None),
    "validate": (("validation_step",), "val_dataloader"),
    "test": (("test_step",), "test_dataloader"),
    "predict": (("predict_step", "forward"), "predict_dataloader"),
}


def _defines(cls: type, base: type, hooks: tuple[str, ...]) -> bool:
    return any(getattr(cls, hook, None) is not getattr(base, hook, None) for hook in hooks)


def _missing(subcommand: str, model_class: type, data_class: type | None) -> str | None:
    """What ``subcommand`` would lack to run ``model_class`` on ``data_class``, or ``None``."""
    hooks, loader = SUBCOMMAND_NEEDS[subcommand]
    if not _defines(model_class, L.LightningModule, hooks):
        return f"{model_class.__name__} defines no {' or '.join(hooks)}"
    if loader and data_class and not _defines(data_class, L.LightningDataModule, (loader,)):
        return f"{data_class.__name__} defines no {loader}"
    return None


def refuse_pointless_subcommand(subcommand: str | None, model: Any, data: Any) -> None:
    """A subcommand that has nothing to run for the configured module (``validate`` of an
    unlearning method, ``fit`` of the evaluator, ``predict`` on a datamodule without a predict
    loader) is refused in one line naming the subcommands that do, before anything is built;
    Lightning would fail deep in its loop with a traceback."""
    model_class, data_class = _configured_class(model), _configured_class(data)
    if subcommand not in SUBCOMMAND_NEEDS or model_class is None:
        return
    missing = _missing(subcommand, model_class, data_class)
    if missing is None:
        return
    name = model_class.__name__
    runs = [other for other in SUBCOMMAND_NEEDS if _missing(other, model_class, data_class) is None]
    listed = " and ".join([", ".join(runs[:-1]), runs[-1]] if len(runs) > 1 else runs)
    where = f"it runs under {listed}" if runs else "no subcommand runs it"
    hint = (
        "; its result is scored by `ps-lightning test --config configs/<dataset>/evaluate.yaml`"
        if issubclass(model_class, UnlearningModule)
        else ""
    )
    raise ValueError(
        f"`ps-lightning {subcommand}` has nothing to run for {name} ({missing}): {where}{hint}."
    )
