"""StyleGAN2's generator and discriminator at small resolution: the skip-connected generator of
Karras et al. 2020 (§4.1, Fig. 7) and NVIDIA's CIFAR-10 discriminator (``orig``: no residual
connections) or the paper's residual one (``resnet``, its config F), sized from the image
shape like the lab's other conv nets.

A square side is halved while it stays even and at least 8 (``lab.gen.nets.plan``): 16 px
runs at 4 -> 8 -> 16, 32 px at 4 -> 8 -> 16 -> 32, 28 px natively at 7 -> 14 -> 28. The
channels double at each halving from ``width`` at full resolution, up to ``max_width``.
"""

import itertools
import math

import torch
from torch import nn

from lab.errors import ConfigError
from lab.gen.nets import plan
from lab.gen.stylegan_layers import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    MinibatchStd,
    StyledConv,
    ToRGB,
    upsample,
)


def resolutions(shape: tuple[int, int, int]) -> list[int]:
    """The sides of the feature maps, smallest first (e.g. [4, 8, 16])."""
    _, height, width = shape
    if height != width:
        raise ConfigError(f"images are {height}x{width}: stylegan needs square images")
    stages, base = plan(height)
    if stages == 0:
        raise ConfigError(f"dataset.size={height}: stylegan needs an even side >= 8 (16, 28, 32)")
    return [base * 2**i for i in range(stages + 1)]


def channels_at(side: int, size: int, width: int, max_width: int) -> int:
    return min(width * size // side, max_width)


class SynthesisBlock(nn.Module):
    """One resolution: (upsample and) two styled convs, the first block one conv on the
    constant; its toRGB output is added to the upsampled image of the blocks below (skip)."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, side: int, channels: int, first: bool):
        super().__init__()
        convs = [] if first else [StyledConv(c_in, c_out, w_dim, side, up=True)]
        self.convs = nn.ModuleList([*convs, StyledConv(c_out, c_out, w_dim, side)])
        self.to_rgb = ToRGB(c_out, channels, w_dim)

    def forward(
        self,
        x: torch.Tensor,
        image: torch.Tensor | None,
        ws: torch.Tensor,
        noise: str,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws``: [N, len(convs) + 1, w_dim], one w per conv and the last for toRGB."""
        for i, conv in enumerate(self.convs):
            x = conv(x, ws[:, i], noise, generator)
        rgb = self.to_rgb(x, ws[:, -1])
        return x, rgb if image is None else upsample(image) + rgb


class Synthesis(nn.Module):
    """A learned constant at the smallest side, styled up to the image; ``num_ws`` styles."""

    def __init__(self, shape: tuple[int, int, int], w_dim: int, width: int, max_width: int):
        super().__init__()
        channels, size, _ = shape
        sides = resolutions(shape)
        widths = [channels_at(side, size, width, max_width) for side in sides]
        self.const = nn.Parameter(torch.randn(widths[0], sides[0], sides[0]))
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[max(i - 1, 0)], widths[i], w_dim, side, channels, first=i == 0)
            for i, side in enumerate(sides)
        )
        # A block's toRGB shares its w with the next block's first conv (NVIDIA's layout).
        self.starts = [0]
        for block in self.blocks:
            self.starts.append(self.starts[-1] + len(block.convs))
        self.num_ws = self.starts[-1] + 1
        # Coarse styles: the lower half of the resolutions (4 and 8 at 16 or 32 px, 7 and 14
        # at 28 px), always leaving one block of fine ones.
        coarse = min(math.ceil(len(sides) / 2), len(sides) - 1)
        self.mixing_cutoff = self.starts[coarse]

    def forward(
        self,
        ws: torch.Tensor,
        noise: str = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x, image = self.const.expand(len(ws), *self.const.shape), None
        for block, start, end in zip(self.blocks, self.starts, self.starts[1:], strict=False):
            x, image = block(x, image, ws[:, start : end + 1], noise, generator)
        return image


class StyleGenerator(nn.Module):
    """z -> w (mapping network) -> one w per layer -> image (synthesis network)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        z_dim: int,
        w_dim: int,
        width: int,
        max_width: int,
        mapping_depth: int,
    ):
        super().__init__()
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_depth)
        self.synthesis = Synthesis(shape, w_dim, width, max_width)

    def styles(self, z: torch.Tensor, psi: float = 1.0, track: bool = True) -> torch.Tensor:
        """[N, num_ws, w_dim]: each code's w, truncated by ``psi``, broadcast to every layer."""
        w = self.mapping(z, track)
        if psi != 1:
            w = self.mapping.truncate(w, psi)
        return w[:, None].expand(-1, self.synthesis.num_ws, -1)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise: str = "random") -> torch.Tensor:
        return self.synthesis(self.styles(z, psi), noise)


D_ARCHITECTURES = ("resnet", "orig")


class DiscriminatorBlock(nn.Module):
    """One resolution of the ``resnet`` discriminator: a 3×3 conv and a 3×3 conv that halves
    the side, plus a linear 1×1 skip that halves it too (blur, stride 2); the sum is scaled by
    √½ to keep its variance (Karras et al. 2020, Fig. 7c; NVIDIA's ``architecture='resnet'``)."""

    def __init__(self, c: int, c_next: int):
        super().__init__()
        self.conv0 = EqualConv2d(c, c, 3)
        self.conv1 = EqualConv2d(c, c_next, 3, down=True)
        self.skip = EqualConv2d(c, c_next, 1, activate=False, down=True, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv1(self.conv0(x)) + self.skip(x)) * math.sqrt(0.5)


class StyleDiscriminator(nn.Module):
    """fromRGB at full resolution, two 3×3 convs per resolution (the second downsamples; with a
    residual skip in the ``resnet`` architecture, none in ``orig``), then at the smallest side:
    minibatch standard deviation, a conv, two dense layers."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        width: int,
        max_width: int,
        mbstd_group: int,
        architecture: str = "orig",
    ):
        super().__init__()
        if architecture not in D_ARCHITECTURES:
            raise ConfigError(
                f"model.d_architecture={architecture}: choose one of {', '.join(D_ARCHITECTURES)}"
            )
        self.architecture = architecture
        channels, size, _ = shape
        sides = resolutions(shape)[::-1]  # largest first
        widths = [channels_at(side, size, width, max_width) for side in sides]
        layers: list[nn.Module] = [EqualConv2d(channels, widths[0], 1)]
        for c, c_next in itertools.pairwise(widths):
            if architecture == "resnet":
                layers.append(DiscriminatorBlock(c, c_next))
            else:  # flat, the layer names of every checkpoint from before ``resnet``
                layers += [EqualConv2d(c, c, 3), EqualConv2d(c, c_next, 3, down=True)]
        c, side = widths[-1], sides[-1]
        layers += [
            MinibatchStd(mbstd_group),
            EqualConv2d(c + 1, c, 3),
            nn.Flatten(),
            EqualLinear(c * side * side, c, activate=True),
            EqualLinear(c, 1),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
