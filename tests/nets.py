"""A user's own backbone, for the class-path tests: any nn.Module with the (B,1,28,28) -> (B,10) contract."""

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.net(x)
