"""Which PS settings a Python API request takes when it names none: a dataset's shipped ones.

The CLI reads ``configs/<dataset>/ps.yaml``, whose values were chosen per dataset
(docs/unlearning.md, "Shipped defaults"); `PSUnlearnModule`'s own defaults are the paper's PS,
which on some datasets forgets nothing (digits, a whole class: forget accuracy 1.0). The API
takes the same file, so a notebook and ``ps-lightning fit`` agree: ``preset="shipped"`` (the
default) reads it, following its ``config:`` include as jsonargparse does; ``preset="paper"``
keeps the module's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

Preset = Literal["shipped", "paper"]
PRESETS = ("shipped", "paper")
# The repository's configs, beside the package in a checkout (the README installs it editable).
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = "PSUnlearnModule's defaults (the paper's PS)"
# Set per request, not per dataset: the API's own arguments.
_REQUEST_KEYS = ("original_ckpt", "num_classes", "in_channels")


def _model_init_args(path: Path) -> dict[str, Any]:
    """``model.init_args`` of a config file, those of the file it includes (``config:``) under
    its own, as jsonargparse applies them."""
    config = yaml.safe_load(path.read_text()) or {}
    included = config.get("config")
    init_args = _model_init_args(path.parent / included) if isinstance(included, str) else {}
    model = config.get("model")
    if isinstance(model, dict):
        init_args.update(model.get("init_args") or {})
    return init_args


def ps_options(
    dataset: str, preset: Preset, configs: Path = CONFIGS, fallback: str | None = None
) -> tuple[dict[str, Any], str]:
    """The `PSUnlearnModule` options of ``preset`` for ``dataset``, and where they come from
    (a sentence for the result and the warning): ``shipped`` reads
    ``<configs>/<dataset>/ps.yaml``, else ``<configs>/<fallback>/ps.yaml`` (a user's image
    folder under its own name: ``image_folder``); a dataset without either gets the paper's."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not one of {PRESETS}.")
    if preset == "paper":
        return {}, PAPER
    if not configs.is_dir():
        raise FileNotFoundError(
            f"preset='shipped' reads the repository's configs/, not found at {configs}: this "
            "install has none (install from a clone: pip install -e .), or pass "
            "preset='paper' or the options."
        )
    path = configs / dataset / "ps.yaml"
    if not path.is_file() and fallback is not None:
        path = configs / fallback / "ps.yaml"
    if not path.is_file():
        return {}, f"{PAPER}: no shipped settings for '{dataset}' ({path} not found)"
    options = {k: v for k, v in _model_init_args(path).items() if k not in _REQUEST_KEYS}
    return options, f"the shipped settings of {path.parent.name}/{path.name}"
