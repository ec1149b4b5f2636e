"""DCGAN-style convolutional nets sized from the image shape.

A square ``size`` x ``size`` image is halved by strided convolutions while the side stays even
and at least 8, so 8 -> 4, 16 -> 4, 28 -> 7, 32 -> 4, 64 -> 4. ``ConvEncoder`` maps an image to
a vector (a GAN's discriminator score, an autoencoder's code); ``ConvDecoder`` mirrors it, from
a code to an image (a GAN's generator, an autoencoder's decoder).
"""

import itertools

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from lab.errors import ConfigError


def plan(size: int) -> tuple[int, int]:
    """(number of stride-2 stages, side of the smallest feature map)."""
    stages = 0
    while size % 2 == 0 and size >= 8:
        size //= 2
        stages += 1
    return stages, size


def _shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    channels, height, width = shape
    if height != width:
        raise ConfigError(f"images are {height}x{width}: the conv nets need square images")
    if plan(height)[0] == 0:
        raise ConfigError(f"dataset.size={height}: use an even side >= 8 (e.g. 16, 28, 32)")
    return channels, height, width


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per-sample, as a WGAN-GP critic needs (the penalty is per sample)
        return nn.GroupNorm(1, channels)
    if kind in ("none", "spectral"):  # spectral normalises the weights (ConvEncoder), not maps
        return nn.Identity()
    raise ConfigError(f"norm={kind}: use batch, layer, spectral or none")


class ConvDecoder(nn.Module):
    """z -> image: a linear projection to the smallest map, then transposed convolutions.

    Returns raw outputs: the caller applies tanh (GANs) or reads them as Bernoulli logits
    (autoencoders).
    """

    def __init__(self, z_dim: int, shape: tuple[int, int, int], width: int):
        super().__init__()
        channels, size, _ = _shape(shape)
        stages, base = plan(size)
        widths = [width * 2**i for i in reversed(range(stages))]  # e.g. [128, 64]
        self.base = (widths[0], base, base)
        self.project = nn.Sequential(
            nn.Linear(z_dim, widths[0] * base * base, bias=False),
            nn.Unflatten(1, self.base),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))


class ConvEncoder(nn.Module):
    """image -> ``out_dim`` numbers: 1 for a GAN's discriminator, a code for an autoencoder."""

    def __init__(self, shape: tuple[int, int, int], out_dim: int, width: int, norm: str):
        super().__init__()
        channels, size, _ = _shape(shape)
        stages, base = plan(size)
        widths = [width * 2**i for i in range(stages)]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in itertools.pairwise(widths):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm in ("none", "spectral")),
                _norm(norm, c_out),
                nn.LeakyReLU(0.2),
            ]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * base * base, out_dim)]
        if norm == "spectral":  # SN-GAN (Miyato et al. 2018): every layer 1-Lipschitz
            layers = [
                spectral_norm(m) if isinstance(m, nn.Conv2d | nn.Linear) else m for m in layers
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def init_dcgan(module: nn.Module) -> None:
    """Radford et al.'s initialisation: N(0, 0.02) weights, N(1, 0.02) norm scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(_raw_weight(m), 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _raw_weight(module: nn.Module) -> torch.Tensor:
    """The weight parameter itself: under spectral norm, the unnormalised one it is made from."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight
