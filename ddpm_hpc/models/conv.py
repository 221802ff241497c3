"""The practical's first network (section 3): conv-BN-ReLU-conv. It sees neither t nor labels."""

from torch import nn


class SeedConvNet(nn.Module):
    def __init__(self, out_channels: int = 3, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.LazyConv2d(width, 3, 1, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, out_channels, 3, 1, 1),
        )

    def forward(self, x, t=None, labels=None):
        return self.net(x)
