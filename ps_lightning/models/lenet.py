"""LeNet-5 for 32×32 images, with BatchNorm after each convolution.

The classic layout (two 5×5 conv/pool stages, then a small MLP), with the second hidden layer
narrowed to 64 units: its output is the feature vector whose class prototypes are the rows of
`fc.weight`.
"""

from __future__ import annotations

from torch import Tensor, nn

from ps_lightning.models.last_block import LastBlock


class LeNet5Net(nn.Module):
    feature_dim: int = 64

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # 32 -> 28
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # 14 -> 10
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 10 -> 5
        )
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, self.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.mlp(self.features(x))

    def last_block(self) -> LastBlock:
        return LastBlock(self.features, self.mlp)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))
