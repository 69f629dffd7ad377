"""The GPU data path, checked on the CPU for correctness: the images kept on the Trainer's device
(``data_on_device``), channels-last weights and a compiled forward change no number and no
checkpoint key."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from ps_lightning.data import DigitsDataModule
from ps_lightning.models import LeNet5
from ps_lightning.models.device_speed import ChannelsLast, CompileNetwork


def test_data_on_device_moves_the_stored_images_once_to_the_trainers_device() -> None:
    data = DigitsDataModule(data_dir="data", data_on_device=True)
    # A device every tensor can move to on any machine: "meta" stands in for the GPU.
    data.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("meta")),
        log_dir=None,
        is_global_zero=True,
    )
    data.setup("fit")
    images, labels = data.samples("train").tensors
    assert images.device.type == "meta" and labels.device.type == "meta"
    assert data.samples("test").tensors[0].device.type == "meta"
    assert data.train_fingerprint == DigitsDataModule(data_dir="data").train_fingerprint


def test_data_on_device_with_loader_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="set num_workers 0"):
        DigitsDataModule(data_dir="data", data_on_device=True, num_workers=2)


def test_channels_last_weights_give_the_same_logits() -> None:
    torch.manual_seed(0)
    model = LeNet5(num_classes=10, in_channels=3).eval()  # 1 channel: NCHW is NHWC
    images = torch.randn(8, 3, 32, 32)
    expected = model(images)
    ChannelsLast().setup(None, model, "fit")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)


def test_a_compiled_network_keeps_its_checkpoint_keys_and_its_logits() -> None:
    torch.manual_seed(0)
    model = LeNet5(num_classes=10, in_channels=1).eval()
    keys = list(model.state_dict())
    images = torch.randn(4, 1, 32, 32)
    expected = model(images)
    plain = copy.deepcopy(model)
    CompileNetwork(backend="eager").setup(None, model, "fit")
    assert model.net._compiled_call_impl is not None
    # The feature passes of the unlearning methods and the evaluation call this one directly.
    assert "forward_features" in vars(model.net)
    torch.testing.assert_close(model.forward_features(images), plain.forward_features(images))
    assert list(model.state_dict()) == keys
    plain.load_state_dict(model.state_dict())  # loads without the callback
    torch.testing.assert_close(model(images), expected)
