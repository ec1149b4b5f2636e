"""StyleGAN2 (Karras et al. 2020) at small resolution, with NVIDIA's CIFAR-10 settings as the
guide: a short mapping network, the non-saturating loss, lazy R1 on the discriminator, and an
EMA of the generator's weights that evaluation samples from.

The nets are in ``lab/gen/stylegan_nets.py``, their layers in ``lab/gen/stylegan_layers.py``.
Evaluation draws with the noise inputs fixed (``const``, as NVIDIA's sample grids do), so an
image is a function of its code; the ``noise`` figure shows what fresh noise changes.
"""

import copy

import torch
from torch import nn

from lab.compute import Compute
from lab.config import require_positive
from lab.errors import ConfigError
from lab.gen.augment import DiffAugment
from lab.gen.gan import Adversarial
from lab.gen.losses import nonsaturating_generator_loss, nonsaturating_loss, r1_penalty
from lab.gen.models import Batches, Figures
from lab.gen.stylegan_nets import StyleDiscriminator, StyleGenerator

FIGURE_SEED = 0  # the figures draw the same codes at every evaluation, to watch them change


def ema_decay(images: int, batch: int, half_life: float, rampup: float | None) -> float:
    """β = 0.5^(batch / h), h = min(half_life, rampup · images): the average keeps half of
    itself every h images, and early on the ramp keeps it from holding on to the initial
    weights (NVIDIA's ``ema_kimg`` and ``ema_rampup``)."""
    h = half_life if rampup is None else min(half_life, rampup * images)
    return 0.5 ** (batch / max(h, 1e-8))


@torch.no_grad()
def ema_update(average: nn.Module, current: nn.Module, beta: float) -> None:
    """θ̄ <- β θ̄ + (1 - β) θ for the weights; buffers (the mean w, fixed noise) are copied."""
    for a, c in zip(average.parameters(), current.parameters(), strict=True):
        a.lerp_(c, 1 - beta)
    for a, c in zip(average.buffers(), current.buffers(), strict=True):
        a.copy_(c)


def lazy_adam(lr: float, betas, interval: int) -> tuple[float, tuple[float, float]]:
    """Adam for a net that also takes a penalty step every ``interval`` steps (Karras et al.
    2020, App. C): with c = k / (k + 1), lr·c and β^c keep its pace per main step."""
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def mix_styles(ws: torch.Tensor, other: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Layers before ``cutoff`` take their style from ``ws``, the rest from ``other``."""
    return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)


class StyleGAN(Adversarial):
    """StyleGAN2: a style-based generator against a conv discriminator, non-saturating loss.

    Every ``r1_interval`` discriminator steps, an extra step descends γ/2 · k · R1 (lazy
    regularisation); ``r1_gamma: 0`` turns it off. ``style_mixing``: the probability that a
    training batch takes its styles from two codes, switching at a random layer. ``truncation``
    is the ψ of the evaluation's ``truncated`` grid; FID is always scored at ψ = 1.
    ``augment``: the DiffAugment transforms the discriminator sees images through, R1's
    reals included (its gradient is taken through them, as in Zhao et al.'s StyleGAN2).
    """

    headline_metric = "train/d_loss"

    def __init__(
        self,
        shape,
        compute: Compute,
        z_dim: int = 64,
        w_dim: int = 64,
        width: int = 16,
        max_width: int = 256,
        mapping_depth: int = 2,
        lr: float = 4e-3,
        betas=(0.0, 0.99),
        r1_gamma: float = 1.0,
        r1_interval: int = 16,
        style_mixing: float = 0.0,
        ema_half_life: float = 10_000,
        ema_rampup: float | None = 0.05,
        mbstd_group: int = 4,
        d_architecture: str = "orig",
        truncation: float = 0.7,
        augment: list[str] | None = None,
        channels_last: bool = True,
        total_steps: int | None = None,
        lr_anneal: bool = False,
    ):
        super().__init__(shape, compute, z_dim, width, channels_last)
        self.augment = DiffAugment(augment)
        require_positive(
            "model",
            w_dim=w_dim,
            max_width=max_width,
            mapping_depth=mapping_depth,
            r1_interval=r1_interval,
            ema_half_life=ema_half_life,
            mbstd_group=mbstd_group,
        )
        check_fraction("model.style_mixing", style_mixing, low_open=False)
        check_fraction("model.truncation", truncation)
        if r1_gamma < 0:
            raise ConfigError(f"model.r1_gamma={r1_gamma}: must be >= 0 (0 turns R1 off)")
        if ema_rampup is not None:
            require_positive("model", ema_rampup=ema_rampup)
        self.r1_gamma, self.r1_interval, self.style_mixing = r1_gamma, r1_interval, style_mixing
        self.ema_half_life, self.ema_rampup, self.truncation = ema_half_life, ema_rampup, truncation
        generator = StyleGenerator(self.shape, z_dim, w_dim, width, max_width, mapping_depth)
        nets = {
            "generator": generator,
            "discriminator": StyleDiscriminator(
                self.shape, width, max_width, mbstd_group, d_architecture
            ),
            "generator_ema": copy.deepcopy(generator).requires_grad_(False),
        }
        self.nets = {
            k: v.to(self.device, memory_format=self.memory_format) for k, v in nets.items()
        }
        self.optimizers = {
            "generator": self._adam("generator", lr, betas),
            "discriminator": self._adam("discriminator", *lazy_adam(lr, betas, r1_interval)),
        }
        self._schedule(total_steps, lr_anneal)
        self.r1 = torch.zeros((), device=self.device)  # the last penalty, logged every step

    def _fake(self, n: int) -> torch.Tensor:
        """A training batch of the generator's raw images: fresh noise, maybe mixed styles."""
        G = self.nets["generator"]
        with self.compute.autocast():
            ws = G.styles(self.latent(n))
            if self.style_mixing and float(torch.rand(())) < self.style_mixing:
                cutoff = int(torch.randint(1, G.synthesis.num_ws, ()))
                ws = mix_styles(ws, G.styles(self.latent(n), track=False), cutoff)
            return G.synthesis(ws).float()

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        """A discriminator step (and every ``r1_interval``-th an R1 step), a generator step,
        then the EMA; detached device scalars. One generator forward serves both steps (as
        PyTorch's DCGAN example): the discriminator sees the batch detached, the generator's
        step scores it again with the updated discriminator. NVIDIA draws a second batch; one
        saves ~10% of an update here, at the same FID (seeds 10, 11: 3.19, 3.18 at 6,600
        steps against 3.22, 3.15 at 6,000 in the same time)."""
        D = self.nets["discriminator"]
        real = batches()
        fake = self._fake(len(real))
        d_real, d_fake = self._critic(real), self._critic(fake.detach())
        d_loss = nonsaturating_loss(d_real, d_fake)
        self._step(d_loss, "discriminator")
        if self.r1_gamma and self.updates % self.r1_interval == 0:
            penalty = r1_penalty(self._critic, real)
            self._step(penalty * (self.r1_gamma / 2 * self.r1_interval), "discriminator")
            self.r1 = penalty.detach()
        D.requires_grad_(False)  # the generator's step needs no discriminator gradients
        g_loss = nonsaturating_generator_loss(self._critic(fake))
        self._step(g_loss, "generator")
        D.requires_grad_(True)
        self._count_update()
        beta = ema_decay(self.updates * len(real), len(real), self.ema_half_life, self.ema_rampup)
        ema_update(self.nets["generator_ema"], self.nets["generator"], beta)
        metrics = {
            "train/d_loss": d_loss,
            "train/g_loss": g_loss,
            "train/d_real": d_real.mean(),
            "train/d_fake": d_fake.mean(),
            "train/r1": self.r1,
        }
        return {key: value.detach() for key, value in metrics.items()}

    def _sampler(self) -> StyleGenerator:
        """The EMA generator outside training, the generator itself in training."""
        G = self.nets["generator"]
        return G if G.training else self.nets["generator_ema"]

    def _draw(self, ws: torch.Tensor, noise: str = "const", generator=None) -> torch.Tensor:
        with self.compute.autocast():
            images = self._sampler().synthesis(ws, noise, generator)
        return images.float().clamp(-1, 1)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.generate_truncated(z, 1.0)

    def generate_truncated(self, z: torch.Tensor, psi: float) -> torch.Tensor:
        """Images in [-1, 1] from codes whose w is pulled towards the mean w: ψ = 1 is none."""
        check_fraction("truncation", psi)
        return self._draw(self._sampler().styles(z, psi))

    def figures(self, x: torch.Tensor) -> Figures:
        """``truncated`` samples (ψ = model.truncation), the ``style_mixing`` grid and the
        ``noise`` grid, from the same codes at every evaluation."""
        generator = torch.Generator().manual_seed(FIGURE_SEED)
        z = self.latent(64 + 6 + 6 + 8, generator)
        figures = {
            "style_mixing": (self.style_mixing_grid(z[64:70], z[70:76]), 7),
            "noise": (self.noise_grid(z[76:], generator), 8),
        }
        if self.truncation != 1:
            figures["truncated"] = (self.generate_truncated(z[:64], self.truncation), 8)
        return figures

    def style_mixing_grid(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(R + 1) × (C + 1) images: the column codes' images along the top, the row codes'
        down the left, and at (r, c) the coarse styles of row r with the fine ones of column c
        (coarse: the lower half of the resolutions, ``Synthesis.mixing_cutoff``)."""
        G = self._sampler()
        row_ws, column_ws = G.styles(rows), G.styles(columns)
        R, C = len(rows), len(columns)
        mixed = mix_styles(
            row_ws.repeat_interleave(C, dim=0), column_ws.repeat(R, 1, 1), G.synthesis.mixing_cutoff
        )
        mixed = self._draw(mixed).reshape(R, C, *self.shape)
        blank = torch.ones(1, *self.shape, device=self.device)
        row_images = self._draw(row_ws)[:, None]
        body = torch.cat([row_images, mixed], dim=1).flatten(0, 1)
        return torch.cat([blank, self._draw(column_ws), body])

    def noise_grid(self, z: torch.Tensor, generator: torch.Generator, draws: int = 32):
        """One code per row: 7 images with fresh noise, then the per-pixel standard deviation
        over ``draws`` draws (white: where the noise inputs change the image most)."""
        ws = self._sampler().styles(z)
        samples = torch.stack([self._draw(ws, "random", generator) for _ in range(draws)])
        spread = samples.std(dim=0).mean(dim=1, keepdim=True)  # [R, 1, H, W]
        spread = (spread / spread.max().clamp_min(1e-8) * 2 - 1).expand(-1, self.shape[0], -1, -1)
        return torch.cat([samples[:7].transpose(0, 1), spread[:, None]], dim=1).flatten(0, 1)

    def state_dict(self) -> dict:
        return super().state_dict() | {"r1": self.r1.cpu()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.r1 = state["r1"].to(self.device)


def check_fraction(key: str, value: float, low_open: bool = True) -> None:
    """``key`` in (0, 1] (or [0, 1] with ``low_open=False``), else a one-line ConfigError."""
    low_ok = value > 0 if low_open else value >= 0
    if not (low_ok and value <= 1):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ConfigError(f"{key}={value}: must be in {interval}")
