"""ImageClassifier: the initial prototypes W0, checkpoints and safe loading."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from ps_lightning.data import DigitsDataModule
from ps_lightning.models import (
    VGG16,
    CifarResNet,
    LeNet5,
    ResNet18,
    ResNet20,
    ResNet50,
    ResNet56,
    load_classifier,
)
from ps_lightning.models.classifier import classifier_record

# (class, input C×H×W, classes, feature dim)
ARCHS = {
    "LeNet5": (LeNet5, (1, 32, 32), 10, 64),
    "ResNet20": (ResNet20, (3, 32, 32), 10, 64),
    "ResNet56": (ResNet56, (3, 32, 32), 100, 64),
    "ResNet18": (ResNet18, (3, 32, 32), 10, 512),
    "ResNet50": (ResNet50, (3, 32, 32), 100, 2048),
    "VGG16": (VGG16, (3, 64, 64), 200, 1024),
}
SMALL = ["LeNet5", "ResNet20", "ResNet56"]


@pytest.mark.parametrize("name", list(ARCHS))
def test_initial_prototypes_are_the_final_layer_at_construction(name: str) -> None:
    cls, shape, num_classes, feature_dim = ARCHS[name]
    torch.manual_seed(0)
    model = cls().eval()
    assert model.prototypes is model.net.fc
    assert model.initial_prototypes.shape == (num_classes, feature_dim)
    assert torch.equal(model.initial_prototypes, model.net.fc.weight)
    # A persistent buffer (saved in checkpoints), never a trained parameter or an alias.
    assert "initial_prototypes" in model.state_dict()
    assert "initial_prototypes" not in dict(model.named_parameters())
    assert model.initial_prototypes.data_ptr() != model.net.fc.weight.data_ptr()
    assert torch.equal(model.initial_bias, model.net.fc.bias)
    assert "initial_bias" in model.state_dict()
    assert model.initial_bias.data_ptr() != model.net.fc.bias.data_ptr()
    with torch.inference_mode():
        x = torch.randn(2, *shape)
        assert model(x).shape == (2, num_classes)
        assert model.forward_features(x).shape == (2, feature_dim)


@pytest.mark.parametrize("name", SMALL)
def test_training_steps_change_prototypes_but_not_initial_prototypes(name: str) -> None:
    cls, shape, num_classes, _ = ARCHS[name]
    torch.manual_seed(0)
    model = cls().train()
    w0 = model.net.fc.weight.detach().clone()
    b0 = model.net.fc.bias.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
    x, y = torch.randn(4, *shape), torch.arange(4) % num_classes
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert not torch.allclose(model.net.fc.weight, w0)
    assert torch.equal(model.initial_prototypes, w0)
    assert not torch.equal(model.net.fc.bias, b0)
    assert torch.equal(model.initial_bias, b0)


def test_cifar_resnet_depth_is_recorded_and_rebuilt(tmp_path: Path) -> None:
    model = CifarResNet(depth=8, num_classes=5)
    assert classifier_record(model, None)["init_args"]["depth"] == 8
    path = tmp_path / "model.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "ps_lightning": classifier_record(model, None)}, path
    )
    loaded, _ = load_classifier(str(path))
    assert type(loaded) is CifarResNet
    assert loaded.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", SMALL)
def test_record_round_trip_rebuilds_architecture_weights_and_w0(tmp_path: Path, name: str) -> None:
    cls = ARCHS[name][0]
    torch.manual_seed(1)
    model = cls()
    with torch.no_grad():
        model.net.fc.weight.add_(1.0)  # trained weights differ from W0
    path = tmp_path / "model.ckpt"
    torch.save(
        {"state_dict": model.state_dict(), "ps_lightning": classifier_record(model, None)}, path
    )
    torch.manual_seed(2)  # a fresh construction would draw other weights
    loaded, record = load_classifier(str(path))
    assert type(loaded) is cls and record["architecture"] == name
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.initial_prototypes, model.initial_prototypes)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """LeNet5 fitted for two steps on digits by a real Trainer; its checkpoint file."""
    root = tmp_path_factory.mktemp("fit")
    L.seed_everything(0, verbose=False)
    model = LeNet5()
    w0 = model.initial_prototypes.clone()
    model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.5)
    dm = DigitsDataModule(batch_size=32)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        default_root_dir=root,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=dm)
    return model, w0, dm, root / "checkpoints" / "model.ckpt"


def test_fit_writes_checkpoint_that_loads_with_weights_only(fitted) -> None:
    _, w0, dm, ckpt = fitted
    assert ckpt.is_file()
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert torch.equal(checkpoint["state_dict"]["initial_prototypes"], w0)
    assert not torch.equal(checkpoint["state_dict"]["net.fc.weight"], w0)
    record = checkpoint["ps_lightning"]
    assert record["architecture"] == "LeNet5"
    assert record["init_args"] == {"num_classes": 10, "in_channels": 1, "label_smoothing": 0.0}
    assert record["data"]["train_on"] == "full"
    assert record["data"]["split_manifest"]["forget_indices"] == dm.forget_indices.tolist()


def test_load_classifier_restores_the_fitted_model_and_w0(fitted) -> None:
    model, w0, _, ckpt = fitted
    loaded, record = load_classifier(str(ckpt))
    assert type(loaded) is LeNet5
    assert torch.equal(loaded.initial_prototypes, w0)
    assert torch.equal(loaded.net.fc.weight, model.net.fc.weight)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert record["data"]["split_manifest"]["dataset"] == "digits"


class _NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, "checkpoint not found"),
        (b"\x00garbage\xff" * 10, ValueError, "could not be read as a ps-lightning file"),
        ({"state_dict": {}}, ValueError, "is not a ps-lightning classifier checkpoint"),
        ({"ps_lightning": {"format": 99}}, ValueError, "is not a ps-lightning classifier"),
        (
            {"ps_lightning": {"format": 1, "architecture": "os.system", "init_args": {}}},
            ValueError,
            "unknown architecture 'os.system'",
        ),
        (_NotATensor(), ValueError, "could not be read"),  # never unpickled
    ],
    ids=["missing", "random-bytes", "plain-lightning", "other-format", "unknown-arch", "pickle"],
)
def test_load_classifier_refuses_other_files(tmp_path: Path, content, error, message) -> None:
    path = tmp_path / "model.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(error, match=message):
        load_classifier(str(path))


def test_load_classifier_refuses_weights_of_another_architecture(tmp_path: Path) -> None:
    lenet = LeNet5()
    record = classifier_record(ResNet20(), None)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": lenet.state_dict(), "ps_lightning": record}, path)
    with pytest.raises(ValueError, match="does not hold ResNet20 weights"):
        load_classifier(str(path))
