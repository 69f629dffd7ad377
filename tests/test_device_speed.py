"""The GPU data path, checked on the CPU for correctness: the images kept on the Trainer's device
(``data_on_device``), channels-last weights and a compiled forward change no number and no
checkpoint key."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from ps_lightning.data import DigitsDataModule
from ps_lightning.models import LeNet5, device_speed
from ps_lightning.models.device_speed import (
    CPU_PASS_ROWS,
    FEW_CHANNELS,
    ChannelsLast,
    CompileNetwork,
    cpu_feature_pass,
    window_max,
)


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


def _layouts(network: torch.nn.Module) -> list[bool]:
    return [p.is_contiguous() for p in network.parameters() if p.dim() == 4]


def test_a_cpu_feature_pass_runs_in_pieces_channels_last_and_gives_back_the_network_as_it_was():
    torch.manual_seed(0)
    net = LeNet5(num_classes=10, in_channels=3).net.eval()
    images = torch.randn(CPU_PASS_ROWS + 44, 3, 32, 32)
    expected = net.forward_features(images)
    pieces: list[tuple[int, bool]] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        conv = net.features[0].weight
        pieces.append((len(inputs), conv.is_contiguous(memory_format=torch.channels_last)))
        return net.forward_features(inputs)

    with torch.no_grad(), cpu_feature_pass(net, forward, torch.device("cpu")) as fast:
        features = fast(images)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert pieces == [(CPU_PASS_ROWS, True), (44, True)]
    assert all(_layouts(net))  # the checkpoint's layout, as before the pass
    # A network the user laid out channels-last stays so; another device is left alone.
    net.to(memory_format=torch.channels_last)
    with cpu_feature_pass(net, forward, torch.device("cpu")):
        pass
    assert not any(_layouts(net))
    with cpu_feature_pass(net, forward, torch.device("cuda")) as unchanged:
        assert unchanged is forward


def test_a_network_in_training_mode_is_passed_whole() -> None:
    net = LeNet5(num_classes=10, in_channels=1).net.train()
    with cpu_feature_pass(net, net.features, torch.device("cpu")) as forward:
        assert forward is net.features  # pieces would change its BatchNorm's batch statistics


@pytest.mark.parametrize("size", [(2, 2), (3, 2)])
def test_window_max_equals_max_pooling_with_uneven_edges_and_nan(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(3, 5, 11, 9)
    inputs[0, 1, 4, 4] = float("nan")
    inputs[1, 2, 0, 0] = float("-inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        laid_out = inputs.contiguous(memory_format=layout)
        torch.testing.assert_close(
            window_max(laid_out, size),
            torch.nn.functional.max_pool2d(laid_out, size),
            rtol=0,
            atol=0,
            equal_nan=True,
        )


def test_a_cpu_feature_pass_pools_few_channels_by_window_max_and_restores_the_pools() -> None:
    few = torch.nn.MaxPool2d(2)
    many = torch.nn.MaxPool2d(2)
    padded = torch.nn.MaxPool2d(2, padding=1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, FEW_CHANNELS - 1, 3),
        padded,
        few,
        torch.nn.Conv2d(FEW_CHANNELS - 1, 16, 3),
        many,
    ).eval()
    images = torch.randn(4, 1, 20, 20)
    expected = net(images)
    calls: list[int] = []
    real = torch.maximum

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(args[0].shape[1])
        return real(*args)

    with torch.no_grad(), cpu_feature_pass(net, net, torch.device("cpu")) as forward:
        torch.maximum = counted  # type: ignore[assignment]
        try:
            features = forward(images)
        finally:
            torch.maximum = real  # type: ignore[assignment]
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert calls == [FEW_CHANNELS - 1] * 3  # the few-channel pool alone, its 4 slices
    assert not any("forward" in vars(layer) for layer in (few, many, padded))


def test_a_cpu_feature_pass_folds_each_running_batch_norm_into_the_convolution_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    folded, watched, batch_stats = (torch.nn.BatchNorm2d(4) for _ in range(3))
    for norm in (folded, watched, batch_stats):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        torch.nn.init.uniform_(norm.weight, 0.5, 2)
        torch.nn.init.uniform_(norm.bias, -1, 1)
    hooked = torch.nn.Conv2d(4, 4, 3, padding=1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), folded, hooked, watched, torch.nn.Conv2d(4, 4, 1), batch_stats
    ).eval()
    batch_stats.train()  # batch statistics: no fixed affine map to fold
    outputs: list[torch.Tensor] = []
    hooked.register_forward_hook(lambda module, args, output: outputs.append(output))
    images = torch.randn(6, 3, 12, 12)
    with torch.no_grad():
        expected = net(images)
    norms_run: list[int] = []
    real = torch.nn.functional.batch_norm

    def counted(inputs: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        norms_run.append(inputs.shape[1])
        return real(inputs, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", counted)
    with torch.no_grad(), cpu_feature_pass(net, net, torch.device("cpu")) as forward:
        features = forward(images)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert len(norms_run) == 2  # the one after a hooked convolution, and the one in training
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)  # the hook saw it
    assert not any("forward" in vars(layer) for layer in net.modules())


def _running_batch_norm(channels: int) -> torch.nn.BatchNorm2d:
    norm = torch.nn.BatchNorm2d(channels)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    return norm


def test_a_fold_applies_only_where_its_sequential_runs_whole() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    features = torch.nn.Sequential(conv, _running_batch_norm(4), torch.nn.ReLU()).eval()
    trunk = features[:1]  # a trunk cut between the convolution and its BatchNorm
    images = torch.randn(5, 3, 10, 10)

    def shared(inputs: torch.Tensor) -> torch.Tensor:  # the convolution also runs on its own
        return features(inputs) + conv(inputs)

    for forward in (trunk, shared, features):
        with torch.no_grad():
            expected = forward(images)
            with cpu_feature_pass(features, forward, torch.device("cpu")) as fast:
                torch.testing.assert_close(fast(images), expected, rtol=1e-5, atol=1e-5)


def test_a_cpu_feature_pass_gives_back_the_network_as_it_was_after_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = LeNet5(num_classes=10, in_channels=1).net.eval()

    def broken(*args: object) -> None:
        raise RuntimeError("folding failed")

    # An error inside the pass, once every layer forward is in place, restores them too.
    with (
        pytest.raises(RuntimeError, match="inside the pass"),
        torch.no_grad(),
        cpu_feature_pass(net, net.features, torch.device("cpu")) as forward,
    ):
        forward(torch.randn(2, 1, 32, 32))
        assert any("forward" in vars(layer) for layer in net.modules())
        raise RuntimeError("inside the pass")
    assert all(_layouts(net))
    assert not any("forward" in vars(layer) for layer in net.modules())
    monkeypatch.setattr(device_speed, "fuse_conv_bn_weights", broken)
    with (
        pytest.raises(RuntimeError, match="folding failed"),
        cpu_feature_pass(net, net.features, torch.device("cpu")),
    ):
        pass
    assert all(_layouts(net))
    assert not any("forward" in vars(layer) for layer in net.modules())
