"""Pins the Lightning behaviour that `load_classifier` and the CLI rely on through private APIs."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

from ps_lightning.models import LeNet5
from ps_lightning.models.classifier import classifier_record, load_classifier
from ps_lightning.steps import PSLightningCLI


class SavesItsArguments(L.LightningModule):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_a_classifier_loaded_while_lightningcli_builds_a_module_keeps_its_own_hparams(
    tmp_path: Path,
) -> None:
    trained = LeNet5(num_classes=7, in_channels=1)
    checkpoint = tmp_path / "model.ckpt"
    torch.save(
        {"state_dict": trained.state_dict(), "ps_lightning": classifier_record(trained, None)},
        checkpoint,
    )
    # What LightningCLI does while it instantiates the module a config names (here: an
    # unlearning method that loads its original classifier in __init__).
    building = {"original_ckpt": str(checkpoint), "num_classes": 3}
    with _given_hyperparameters_context(building, "jsonargparse"):
        # The behaviour the shield in `load_classifier` exists for: a module built inside the
        # context takes the CLI's hyperparameters as its own.
        unshielded = SavesItsArguments(width=2).hparams
        assert unshielded["num_classes"] == 3 and "width" not in unshielded
        model, _ = load_classifier(str(checkpoint))
    assert model.hparams["num_classes"] == 7
    assert "original_ckpt" not in model.hparams


def test_the_private_lightningcli_methods_the_cli_uses_keep_their_names_and_arguments() -> None:
    # PSLightningCLI overrides `_instantiate_trainer` (its progress bar) and calls `_get` (the
    # subcommand's ckpt_path, for the reused-folder check). Renamed in a Lightning release, the
    # override would silently stop running: this fails first, naming the method.
    def arguments(method: object) -> list[str]:
        return list(inspect.signature(method).parameters)

    assert arguments(LightningCLI._instantiate_trainer) == ["self", "config", "callbacks"]
    assert arguments(PSLightningCLI._instantiate_trainer) == ["self", "config", "callbacks"]
    assert arguments(LightningCLI._get) == ["self", "config", "key", "default"]


class _ServesNothing(L.LightningDataModule):
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        raise AssertionError("the fit loop asked the datamodule, not the method")


class _TrainsOnItsOwnRows(L.LightningModule):
    """What `UnlearningModule.setup` does: points the fit loop at the module's own loader."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[float] = []

    def setup(self, stage: str) -> None:
        self.trainer.fit_loop._data_source.instance = self

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.tensor([[7.0], [8.0]]), batch_size=1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(float(batch))
        return (self.weight - batch).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_method_can_point_the_fit_loop_at_its_own_loader_beside_a_datamodule() -> None:
    # The fit loop's private `_data_source.instance` (Lightning 2.6): Lightning offers no
    # public way for a module to serve its training data when a datamodule is attached.
    module = _TrainsOnItsOwnRows()
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=_ServesNothing())
    assert module.seen == [7.0, 8.0]
