"""StyleGAN2's building blocks (Karras et al. 2020), in plain torch so they run on a CPU.

Every weight is stored at unit scale and multiplied by its He constant at run time
(equalized learning rate, Karras et al. 2018, §4.1), so Adam's step is the same size relative
to every layer's weights. Resampling uses the paper's [1, 3, 3, 1] filter: a stride-2
transposed conv followed by the filter upsamples features, bilinear interpolation (the same
filter at ×2, edges clamped) the skip connections' images, and the filter before a stride-2
conv downsamples. NVIDIA fuses these into custom CUDA ops; here they are plain torch calls.
"""

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)  # keeps unit variance through a leaky ReLU of slope 0.2


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x²)) per row: the mapping network's input normalisation."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """y = x (c W)ᵀ + m b with W stored ~ N(0, 1/m²) and c = m / sqrt(fan_in) applied at run
    time, then a gained leaky ReLU if ``activate``. ``lr_mul`` m < 1 slows the layer down by m
    (the mapping network's 0.01)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain, self.bias_gain = lr_mul / math.sqrt(in_features), lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """A convolution with equalized learning rate, optionally downsampling by 2 (blur, then
    stride 2) and followed by a gained leaky ReLU; the discriminator's layer."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        activate: bool = True,
        down: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.activate, self.down = activate, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if self.down and weight.shape[-1] == 1:  # a 1×1 conv commutes with the stride: blur
            x = F.conv2d(blur(x, pad=1, stride=2), weight, self.bias)  # at half resolution
        elif self.down:  # blur at full resolution, then a strided conv (as conv2d_resample)
            x = F.conv2d(blur(x, pad=2), weight, self.bias, stride=2)
        else:
            x = F.conv2d(x, weight, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.activate else x


def blur(x: torch.Tensor, pad: int, stride: int = 1) -> torch.Tensor:
    """The [1, 3, 3, 1] ⊗ [1, 3, 3, 1] / 64 low-pass filter on each channel, zero-padded;
    ``stride`` 2 keeps every other output (filter, then downsample)."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (taps[:, None] * taps[None, :] / 64).expand(x.shape[1], 1, 4, 4)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad)), kernel, stride=stride, groups=x.shape[1])


def upsample(x: torch.Tensor) -> torch.Tensor:
    """×2 with the [1, 3, 3, 1] / 4 filter per axis (what bilinear interpolation is at ×2)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
) -> torch.Tensor:
    """StyleGAN2's convolution (Karras et al. 2020, eqs. 1 and 3), one kernel per sample:

    w'_oik = s_i · w_oik,   w''_oik = w'_oik / sqrt(Σ_ik w'_oik² + ε)

    Computed as NVIDIA trains it: scale the input channels by s, convolve with the shared w,
    scale the output channels by the demodulation coefficient; the same numbers as a grouped
    convolution with per-sample kernels, and a plain batched convolution on any device.
    ``up``: ×2 upsampling as a stride-2 transposed conv, then the [1, 3, 3, 1] filter (the
    same as bilinear upsampling before the conv, at a quarter of the cost).
    """
    x = x * styles[:, :, None, None]
    if up:  # the filter's gain of 4 makes up for the zeros between the transposed conv's taps
        x = blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), pad=1) * 4
    else:
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:  # Σ_ik (s_i w_oik)² = (s²) · (Σ_k w_oik²)ᵀ for every sample and output
        coefficients = (styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8).rsqrt()
        x = x * coefficients[:, :, None, None]
    return x


class NoiseInput(nn.Module):
    """Per-pixel Gaussian noise, one map shared by the channels, times a learned strength that
    starts at 0. ``mode``: ``random`` (fresh noise; from ``generator`` when one is given) or
    ``const`` (a fixed map, as NVIDIA's sample grids use)."""

    def __init__(self, side: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("fixed", torch.randn(side, side))

    def forward(
        self, x: torch.Tensor, mode: str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if mode == "const":
            return x + self.strength * self.fixed
        n, _, height, width = x.shape
        if generator is None:
            noise = torch.randn(n, 1, height, width, device=x.device, dtype=x.dtype)
        else:  # drawn on the CPU, so the same on any device
            noise = torch.randn(n, 1, height, width, generator=generator).to(x)
        return x + self.strength * noise


class StyledConv(nn.Module):
    """A synthesis layer: a modulated and demodulated 3×3 conv (upsampling by 2) whose styles
    are an affine map of w (bias 1, so styles start near 1), noise, bias, leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, side: int, up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.weight_gain = 1 / math.sqrt(c_in * 9)
        self.noise = NoiseInput(side)
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.up = up

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: str = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), up=self.up)
        x = self.noise(x, noise, generator)
        return lrelu(x + self.bias[:, None, None])


class ToRGB(nn.Module):
    """A modulated 1×1 conv to the image's channels, without demodulation (its output is an
    image, not a feature map to keep at unit variance)."""

    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in))
        self.weight_gain = 1 / math.sqrt(c_in)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # A 1×1 conv with a kernel per sample is a batched matrix product over the channels
        # (6.6x faster than modulated_conv2d's conv on a CPU: 64 images, 16 channels to 1 at
        # 16 px, forward and backward, 1.0 ms against 6.8).
        n, c, height, width = x.shape
        kernels = self.weight * self.weight_gain * self.affine(w)[:, None, :]  # [N, out, in]
        rgb = torch.bmm(kernels, x.reshape(n, c, height * width)).reshape(n, -1, height, width)
        return rgb + self.bias[:, None, None]


class MappingNetwork(nn.Module):
    """z -> w: normalise z, then ``depth`` fully connected layers at 0.01× the learning rate.

    In training mode it tracks the mean w (decay ``w_avg_beta``), the centre that truncation
    pulls styles towards.
    """

    def __init__(self, z_dim: int, w_dim: int, depth: int, lr_mul: float = 0.01):
        super().__init__()
        sizes = [z_dim] + [w_dim] * depth
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=lr_mul, activate=True) for a, b in itertools.pairwise(sizes)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = 0.995

    def forward(self, z: torch.Tensor, track: bool = True) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        if self.training and track:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return x

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """w' = w̄ + ψ (w - w̄): ψ < 1 trades variety for typical, cleaner images."""
        return self.w_avg.lerp(w, psi)


class MinibatchStd(nn.Module):
    """Appends the standard deviation of the features across groups of ``group`` images, one
    channel per image, so the discriminator can see a batch that lacks variety."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(self.group, n)  # a group size that divides the batch
        y = x.reshape(g, -1, c, h, w)
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n/g]
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)
