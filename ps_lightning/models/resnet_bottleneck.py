"""A true 50-layer bottleneck ResNet (He et al. 2016) adapted to 32×32 images.

The ImageNet stem (7×7 stride-2 conv + max pool) would shrink a 32×32 image to 8×8 before the
first stage, so it is replaced by a single 3×3 stride-1 conv, as in the common CIFAR ports.
Everything after the stem is torchvision's ResNet-50: stages of [3, 4, 6, 3] bottlenecks with
expansion 4 and 1×1 projection shortcuts, ending in 2048-d features (4×4 spatial before pooling).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ps_lightning.models.resnet_stages import kaiming_init_convs, make_stage


class Bottleneck(nn.Module):
    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3×3 conv (ResNet v1.5), which is what torchvision ships.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet50Net(nn.Module):
    feature_dim: int = 512 * Bottleneck.expansion

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.in_planes = 64
        self.layer1 = self._make_stage(64, 3, stride=1)
        self.layer2 = self._make_stage(128, 4, stride=2)
        self.layer3 = self._make_stage(256, 6, stride=2)
        self.layer4 = self._make_stage(512, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.feature_dim, num_classes)

        kaiming_init_convs(self)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage, self.in_planes = make_stage(
            Bottleneck, self.in_planes, planes, blocks, stride, Bottleneck.expansion
        )
        return stage

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))
