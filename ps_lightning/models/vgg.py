"""VGG16 with BatchNorm for 64×64 images (e.g. Tiny-ImageNet).

Five max pools take 64×64 down to 2×2, so the flattened conv output is 512·2·2 = 2048 rather
than ImageNet's 25088; the classifier is shrunk accordingly and ends in 1024-d features.
"""

from __future__ import annotations

from torch import Tensor, nn

from ps_lightning.models.last_block import LastBlock

# Conv widths; "M" is a 2×2 max pool.
CFG_VGG16: list[int | str] = [
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
]  # fmt: skip


def make_layers(cfg: list[int | str], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            assert isinstance(v, int)
            # No conv bias: the following BatchNorm would cancel it.
            layers += [
                nn.Conv2d(in_channels, v, 3, padding=1, bias=False),
                nn.BatchNorm2d(v),
                nn.ReLU(inplace=True),
            ]
            in_channels = v
    return nn.Sequential(*layers)


class VGG16Net(nn.Module):
    feature_dim: int = 1024

    def __init__(self, num_classes: int = 200, in_channels: int = 3) -> None:
        super().__init__()
        self.features = make_layers(CFG_VGG16, in_channels)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * 2 * 2, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, self.feature_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(),
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def last_block(self) -> LastBlock:
        return LastBlock(self.features, self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))
