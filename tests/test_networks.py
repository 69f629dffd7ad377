"""Shape, interface and architecture checks for the plain nn.Module networks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from ps_lightning.models.lenet import LeNet5Net
from ps_lightning.models.resnet_cifar import CifarResNetNet
from ps_lightning.models.resnet_torchvision import resnet18_net, resnet50_net
from ps_lightning.models.vgg import VGG16Net

# (id, constructor, input shape without batch, num_classes, feature_dim, batch size)
CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, int, int], int, int, int]] = [
    ("lenet-gray", lambda: LeNet5Net(num_classes=10), (1, 32, 32), 10, 64, 4),
    ("lenet-rgb", lambda: LeNet5Net(num_classes=10, in_channels=3), (3, 32, 32), 10, 64, 4),
    ("resnet20", lambda: CifarResNetNet(depth=20, num_classes=10), (3, 32, 32), 10, 64, 4),
    ("resnet56", lambda: CifarResNetNet(depth=56, num_classes=100), (3, 32, 32), 100, 64, 2),
    ("resnet18", lambda: resnet18_net(num_classes=10), (3, 32, 32), 10, 512, 2),
    ("resnet50", lambda: resnet50_net(num_classes=100), (3, 32, 32), 100, 2048, 2),
    ("vgg16", lambda: VGG16Net(num_classes=200), (3, 64, 64), 200, 1024, 2),
]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request: pytest.FixtureRequest):
    """Build each network once; the big ones dominate the test time otherwise."""
    _, build, shape, num_classes, feature_dim, batch = request.param
    torch.manual_seed(0)
    net = build().eval()
    x = torch.randn(batch, *shape)
    return net, x, num_classes, feature_dim


def test_logits_and_features_have_expected_shapes(case) -> None:
    net, x, num_classes, feature_dim = case
    with torch.no_grad():
        feats = net.forward_features(x)
        logits = net(x)
    assert feats.shape == (x.shape[0], feature_dim)
    assert logits.shape == (x.shape[0], num_classes)


def test_feature_dim_matches_fc_input(case) -> None:
    net, _, num_classes, feature_dim = case
    assert net.feature_dim == feature_dim
    assert isinstance(net.fc, nn.Linear)
    assert net.fc.in_features == feature_dim
    assert net.fc.out_features == num_classes


def test_forward_is_fc_of_forward_features(case) -> None:
    net, x, _, _ = case
    with torch.no_grad():
        assert torch.equal(net(x), net.fc(net.forward_features(x)))


def test_eval_mode_is_deterministic(case) -> None:
    net, x, _, _ = case
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        assert torch.equal(net.forward_features(x), net.forward_features(x))


def test_train_mode_backward_reaches_first_layer() -> None:
    torch.manual_seed(0)
    net = CifarResNetNet(depth=20)
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert net.conv1.weight.grad is not None
    assert net.conv1.weight.grad.abs().sum() > 0


def cifar_resnet_expected_params(depth: int, num_classes: int, in_channels: int = 3) -> int:
    """Count from the architecture: bias-free 3×3 convs each followed by BN (2 params/channel)."""
    n = (depth - 2) // 6
    total = in_channels * 16 * 9 + 2 * 16  # stem
    in_planes = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += in_planes * planes * 9 + 2 * planes  # conv1 + bn1
            total += planes * planes * 9 + 2 * planes  # conv2 + bn2
            in_planes = planes
    return total + 64 * num_classes + num_classes  # fc


def test_resnet20_has_known_parameter_count() -> None:
    net = CifarResNetNet(depth=20, num_classes=10)
    assert cifar_resnet_expected_params(20, 10) == 269_722
    assert n_params(net) == 269_722  # the paper's "0.27M"


def test_resnet56_has_known_parameter_count() -> None:
    net = CifarResNetNet(depth=56, num_classes=10)
    assert n_params(net) == cifar_resnet_expected_params(56, 10) == 853_018  # "0.85M"


def test_option_a_shortcuts_add_no_parameters() -> None:
    net = CifarResNetNet(depth=20)
    layer_params = sum(
        n_params(m) for m in net.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)
    )
    assert n_params(net) == layer_params
    # Every conv is a 3×3 on the main path: no 1×1 projection convs sneak in.
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert all(c.kernel_size == (3, 3) for c in convs)


@pytest.mark.parametrize("depth", [0, 2, 18, 21, 34])
def test_invalid_cifar_resnet_depth_raises_helpful_error(depth: int) -> None:
    with pytest.raises(ValueError, match=r"6n\+2") as excinfo:
        CifarResNetNet(depth=depth)
    assert str(depth) in str(excinfo.value)


def test_resnet50_has_fifty_weight_layers() -> None:
    net = resnet50_net(num_classes=100)
    main_path_convs = [
        name
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d) and ".shortcut." not in name
    ]
    projections = [
        name for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and ".shortcut." in name
    ]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(main_path_convs) == 49
    assert len(linears) == 1
    assert len(main_path_convs) + len(linears) == 50
    assert len(projections) == 4  # one projection at the start of each stage


def test_resnet50_parameter_count_matches_torchvision_with_small_stem() -> None:
    # torchvision resnet50 has 25_557_032 parameters; swap its 7×7 stem conv for a 3×3 one
    # (-3*64*40) and its 1000-way fc for a 100-way one (-2049*900).
    net = resnet50_net(num_classes=100)
    assert n_params(net) == 25_557_032 - 3 * 64 * 40 - 2049 * 900 == 23_705_252


def test_resnet18_is_torchvisions_with_a_small_stem() -> None:
    # torchvision resnet18: 11_689_512 parameters; the 3×3 stem saves 3*64*40, the 10-way fc
    # 513*990. Two 3×3 convs per basic block (16) + the stem, one projection in stages 2-4.
    net = resnet18_net(num_classes=10)
    assert n_params(net) == 11_689_512 - 3 * 64 * 40 - 513 * 990 == 11_173_962
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    projections = [name for name in convs if ".shortcut." in name]
    assert len(convs) - len(projections) == 17
    assert projections == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]
    assert all(convs[name].kernel_size == (1, 1) for name in projections)
    with torch.no_grad():
        assert net.layer4(net.layer3(net.layer2(net.layer1(torch.zeros(1, 64, 32, 32))))).shape == (
            1,
            512,
            4,
            4,
        )


def test_lenet_parameter_count() -> None:
    expected = (1 * 6 * 25 + 6) + 2 * 6 + (6 * 16 * 25 + 16) + 2 * 16
    expected += (400 * 120 + 120) + (120 * 64 + 64) + (64 * 10 + 10)
    assert n_params(LeNet5Net(num_classes=10)) == expected == 59_130
