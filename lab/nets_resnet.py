"""``net=impala_resnet``: the residual conv torso of IMPALA (Espeholt et al. 2018).

Three stages, each a 3x3 convolution, a 3x3 max-pool of stride 2 and two residual blocks
(ReLU, conv, ReLU, conv, plus the input), then ReLU and a fully connected layer. Deeper than the
Nature CNN at a similar cost; the paper found it learns faster and generalises better.
"""

from collections.abc import Sequence

import torch
from torch import nn

from lab.errors import ConfigError
from lab.nets import Torso


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ImpalaResNet(Torso):
    """IMPALA's deep torso over (C, H, W) uint8 images: one stage per entry of ``channels``."""

    def __init__(
        self, obs_shape: Sequence[int], channels: Sequence[int] = (16, 32, 32), features: int = 256
    ):
        super().__init__()
        if len(obs_shape) != 3:
            raise ConfigError(
                f"net=impala_resnet needs image observations (C, H, W), but this env gives "
                f"shape {tuple(obs_shape)}; use net=mlp"
            )
        if not channels or any(c < 1 for c in channels) or features < 1:
            raise ConfigError(
                f"net.channels={list(channels)}, net.features={features}: give positive sizes"
            )
        layers: list[nn.Module] = []
        width = obs_shape[0]
        for out in channels:
            layers += [
                nn.Conv2d(width, out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ResidualBlock(out),
                ResidualBlock(out),
            ]
            width = out
        self.convs = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.out_dim = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(obs.float() / 255.0))  # uint8 pixels, scaled on the device
