"""A network of torchvision.models as the classifier: its head found without per-architecture
code, its features and logits those of the network, and a non-``fc`` head (MobileNetV3's
``classifier[3]``) trained by the real CLI on an image folder, then through Naive PS, PS and the
evaluation's metrics, with random weights on tiny data."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_image_folder import train_on_folder, write_folder
from torchvision.models import get_model

from ps_lightning import Unlearner
from ps_lightning.data import ImageFolderDataModule
from ps_lightning.models import TorchvisionClassifier, load_classifier
from ps_lightning.models.head_split import HeadSplitNet, find_head


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("resnet18", "fc"),
        ("mobilenet_v3_small", "classifier.3"),
        ("efficientnet_b0", "classifier.1"),
        ("densenet121", "classifier"),
    ],
)
def test_the_head_is_the_last_linear_layer_with_one_output_per_class(name: str, head: str) -> None:
    assert find_head(get_model(name, num_classes=7), 7) == head


def test_a_network_without_a_linear_head_or_a_wrong_head_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"SqueezeNet has no nn\.Linear with 7 outputs"):
        find_head(get_model("squeezenet1_0", num_classes=7), 7)
    with pytest.raises(ValueError, match=r"head='features' names Sequential .* not an nn.Linear"):
        find_head(get_model("mobilenet_v3_small", num_classes=7), 7, head="features")


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet18"])
def test_split_network_gives_the_networks_logits_from_its_features(name: str) -> None:
    torch.manual_seed(0)
    network = get_model(name, num_classes=5).eval()
    reference = copy.deepcopy(network)
    split = HeadSplitNet(network, find_head(network, 5))
    images = torch.randn(4, 3, 32, 32)

    features = split.forward_features(images)

    assert features.shape == (4, split.fc.in_features)
    torch.testing.assert_close(split.fc(features), reference(images))
    assert not any(m is split.fc for m in split.body.modules())  # the head left the body


def test_a_head_without_a_bias_gets_a_zero_one_and_the_same_logits() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4, bias=False)).eval()
    reference = copy.deepcopy(network)
    split = HeadSplitNet(network, find_head(network, 4))
    images = torch.randn(2, 3, 2, 2)
    assert split.fc.bias is not None and not split.fc.bias.any()
    torch.testing.assert_close(split(images), reference(images))


def test_an_unknown_name_or_grey_images_are_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="network='resnet7' is not a classification network"):
        TorchvisionClassifier("resnet7", num_classes=3)
    with pytest.raises(ValueError, match="in_channels=1: torchvision's networks take RGB"):
        TorchvisionClassifier("resnet18", num_classes=3, in_channels=1)


def test_a_mobilenet_trains_by_the_cli_and_forgets_with_naive_ps_and_ps(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "shapes", ["circle", "square", "star"], {"train": 8, "test": 3}, ".jpg", "RGB"
    )
    checkpoint = train_on_folder(
        folder, tmp_path / "runs", "mobilenet", 2,
        "--model", "TorchvisionClassifier", "--model.network", "mobilenet_v3_small",
    )  # fmt: skip
    model, record = load_classifier(str(checkpoint))
    assert isinstance(model, TorchvisionClassifier) and record["init_args"]["network"] == (
        "mobilenet_v3_small"
    )
    assert model.prototypes.in_features == 1024  # MobileNetV3-Small's penultimate width

    data = ImageFolderDataModule(data_dir=str(folder), name="shapes")
    unlearner = Unlearner.from_checkpoint(checkpoint, data=data)
    forget = [8, 9, 10]  # three "square" images
    naive = unlearner.forget(forget, method="naive")
    ps = unlearner.forget(forget, method="ps", epochs=3)

    def head(classifier: TorchvisionClassifier) -> torch.Tensor:
        layer = classifier.prototypes
        return torch.cat([layer.weight, layer.bias[:, None]], dim=1)

    for result in (naive, ps):  # Naive PS moves W (the paper's surgery), PS the bias
        assert result.forget_indices == forget
        assert not torch.allclose(head(result.model), head(model))
        body = dict(result.model.net.body.named_parameters())
        assert all(torch.equal(t, body[n]) for n, t in model.net.body.named_parameters())
        assert set(result.metrics) >= {"forget_acc", "retain_acc", "test_acc", "mia_lira"}
