"""GANs (DCGAN, WGAN-GP), a VAE and an autoencoder: one optimizer step each per ``update``.

A model sees real batches through a callable (a WGAN critic takes several per generator step)
and returns plain numbers. ``generate(z)`` gives images in [-1, 1] for FID and sample grids.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from lab.compute import Compute
from lab.config import require_positive
from lab.errors import ConfigError
from lab.gen.nets import Discriminator, Generator, init_dcgan

Batches = Callable[[], torch.Tensor]


class GenerativeModel:
    """Nets and optimizers by name, so saving, loading and device moves are written once."""

    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, shape, compute: Compute, z_dim: int, width: int, channels_last: bool):
        require_positive("model", z_dim=z_dim, width=width)
        self.shape, self.compute, self.z_dim = tuple(shape), compute, z_dim
        self.device = compute.device
        self.memory_format = (
            torch.channels_last
            if channels_last and self.device.type == "cuda"
            else torch.contiguous_format
        )

    def _place(self, **nets: nn.Module) -> None:
        self.nets = {}
        for name, net in nets.items():
            init_dcgan(net)
            self.nets[name] = net.to(self.device, memory_format=self.memory_format)

    def _adam(self, net: str, lr: float, betas) -> torch.optim.Adam:
        fused = self.device.type in ("cuda", "cpu")
        return torch.optim.Adam(self.nets[net].parameters(), lr=lr, betas=tuple(betas), fused=fused)

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N(0, I) codes on the device. With a (CPU) generator, e.g. an evaluation's fixed
        batch, they are drawn on the CPU, so they are the same whatever the device."""
        if generator is None:  # training: no host-to-device copy per step
            return torch.randn(n, self.z_dim, device=self.device)
        return torch.randn(n, self.z_dim, generator=generator).to(self.device)

    def train(self, mode: bool = True) -> None:
        for net in self.nets.values():
            net.train(mode)

    def state_dict(self) -> dict:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scaler": self.compute.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.compute.scaler.load_state_dict(state["scaler"])

    def _step(self, loss: torch.Tensor, optimizer: str) -> None:
        self.compute.backward_step(loss, self.optimizers[optimizer], max_grad_norm=None)


def _ema_with_warmup(decay: float):
    """EMA whose decay ramps up as (1 + n) / (10 + n): early averages are not stuck at init."""

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return averaged * d + current * (1 - d)

    return average


class GAN(GenerativeModel):
    """DCGAN with the non-saturating loss, or WGAN-GP (``loss=wgan_gp``) with ``n_critic``.

    ``lr`` is the generator's learning rate and ``d_lr`` the discriminator's (or critic's);
    ``d_lr: null`` uses ``lr``.
    """

    def __init__(
        self,
        shape,
        compute: Compute,
        loss: str = "nonsaturating",
        z_dim: int = 64,
        width: int = 64,
        lr: float = 2e-4,
        d_lr: float | None = None,
        betas=(0.5, 0.999),
        n_critic: int = 1,
        gp_weight: float = 10.0,
        d_norm: str = "batch",
        ema: float | None = 0.999,
        channels_last: bool = True,
        batch_size: int = 64,
    ):
        super().__init__(shape, compute, z_dim, width, channels_last)
        if loss not in ("nonsaturating", "wgan_gp"):
            raise ConfigError(f"model.loss={loss}: use nonsaturating or wgan_gp")
        if loss == "wgan_gp" and d_norm == "batch":
            raise ConfigError(
                "model.d_norm=batch with wgan_gp: the gradient penalty is per sample; "
                "use model.d_norm=layer or none"
            )
        require_positive("model", n_critic=n_critic, batch_size=batch_size)
        self.loss, self.n_critic, self.gp_weight = loss, n_critic, gp_weight
        self.batch_size = batch_size
        self._place(
            generator=Generator(z_dim, self.shape, width),
            discriminator=Discriminator(self.shape, 1, width, d_norm),
        )
        self.optimizers = {
            "generator": self._adam("generator", lr, betas),
            "discriminator": self._adam("discriminator", d_lr or lr, betas),
        }
        if ema is not None and not 0 < ema < 1:
            raise ConfigError(f"model.ema={ema}: use a decay in (0, 1), or null for no EMA")
        self.ema = None
        if ema:  # an exponential moving average of G's weights: what evaluation samples from
            self.ema = AveragedModel(
                self.nets["generator"], avg_fn=_ema_with_warmup(ema), use_buffers=True
            )
            self.nets["generator_ema"] = self.ema

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1]: from the EMA generator when there is one and not training."""
        G = self.nets["generator"]
        if self.ema is not None and not G.training:
            G = self.ema.module
        with self.compute.autocast():
            return torch.tanh(G(z).float())

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.nets["discriminator"](x).float().squeeze(1)

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        """n_critic discriminator steps, then one generator step; detached device scalars."""
        D = self.nets["discriminator"]
        for _ in range(self.n_critic):
            real = batches()
            with torch.no_grad():
                fake = self.generate(self.latent(len(real)))
            d_real, d_fake = self._critic(real), self._critic(fake)
            if self.loss == "wgan_gp":
                gp = self._gradient_penalty(real, fake)
                d_loss = d_fake.mean() - d_real.mean() + self.gp_weight * gp
            else:
                d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            self._step(d_loss, "discriminator")
        D.requires_grad_(False)  # the generator's step needs no discriminator gradients
        scores = self._critic(self.generate(self.latent(self.batch_size)))
        g_loss = -scores.mean() if self.loss == "wgan_gp" else F.softplus(-scores).mean()
        self._step(g_loss, "generator")
        D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update_parameters(self.nets["generator"])
        metrics = {
            "train/d_loss": d_loss,
            "train/g_loss": g_loss,
            "train/d_real": d_real.mean(),
            "train/d_fake": d_fake.mean(),
        }
        if self.loss == "wgan_gp":
            metrics["train/gradient_penalty"] = gp
            metrics["train/wasserstein"] = d_real.mean() - d_fake.mean()
        return metrics

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(||grad D(x_hat)|| - 1)^2 on random interpolates, in fp32 whatever the precision."""
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        score = self.nets["discriminator"](mixed).float().sum()
        (grad,) = torch.autograd.grad(score, mixed, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).square().mean()


class VAE(GenerativeModel):
    """Gaussian encoder, Bernoulli decoder over pixels in [0, 1]; ``beta`` > 1 gives a β-VAE.

    The loss is reconstruction + beta * KL; ``train/elbo`` is always the true ELBO (beta = 1),
    in nats per image, so runs with different betas compare.
    """

    variational = True

    def __init__(
        self,
        shape,
        compute: Compute,
        z_dim: int = 16,
        width: int = 64,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        beta: float = 1.0,
        channels_last: bool = True,
        batch_size: int = 64,
    ):
        super().__init__(shape, compute, z_dim, width, channels_last)
        if beta < 0:
            raise ConfigError(f"model.beta={beta}: must be >= 0")
        self.beta = beta
        out = 2 * z_dim if self.variational else z_dim
        self._place(
            encoder=Discriminator(self.shape, out, width, norm="batch"),
            decoder=Generator(z_dim, self.shape, width),
        )
        params = [p for net in self.nets.values() for p in net.parameters()]
        self.optimizers = {"model": torch.optim.Adam(params, lr=lr, betas=tuple(betas))}
        self.prior: tuple[torch.Tensor, torch.Tensor] | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.compute.autocast():
            h = self.nets["encoder"](x).float()
        if not self.variational:
            return h, torch.zeros_like(h)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.nets["decoder"](z).float()

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z)) * 2 - 1

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode(x)[0])

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image reconstruction (nats) and KL, and the β-weighted loss."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.variational else mu
        target = (x + 1) / 2
        recon = F.binary_cross_entropy_with_logits(
            self.decode_logits(z), target, reduction="none"
        ).sum(dim=(1, 2, 3))
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)
        return {"recon": recon.mean(), "kl": kl.mean(), "loss": (recon + self.beta * kl).mean()}

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        terms = self.terms(batches())
        self._step(terms["loss"], "model")
        metrics = {f"train/{k}": v for k, v in terms.items()}
        if self.variational:
            metrics["train/elbo"] = -(terms["recon"] + terms["kl"])
        else:
            del metrics["train/kl"]
        return metrics

    @torch.no_grad()
    def held_out(self, x: torch.Tensor, chunk: int = 1000) -> dict[str, float]:
        """Per-image reconstruction, KL and ELBO over ``x``, in chunks (MNIST's test set is 10k)."""
        sums = {"recon": 0.0, "kl": 0.0}
        for part in x.split(chunk):
            terms = self.terms(part)
            for key in sums:
                sums[key] += terms[key].item() * len(part)
        recon, kl = sums["recon"] / len(x), sums["kl"] / len(x)
        metrics = {"eval/recon": recon}
        if self.variational:
            metrics |= {"eval/elbo": -(recon + kl), "eval/kl": kl}
        return metrics


class Autoencoder(VAE):
    """Deterministic encoder; samples decode draws from a Gaussian fitted to training codes."""

    variational = False

    def __init__(self, shape, compute: Compute, **kwargs):
        kwargs.pop("beta", None)
        super().__init__(shape, compute, **kwargs)
        self.beta = 0.0  # no KL term: the codes are free

    def state_dict(self) -> dict:
        return super().state_dict() | {"prior": self.prior}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prior = state.get("prior")

    @torch.no_grad()
    def fit_prior(self, images: torch.Tensor) -> None:
        """Mean and Cholesky factor of the codes of ``images`` (float, [-1, 1])."""
        codes = torch.cat([self.encode(x)[0] for x in images.split(512)]).double()
        cov = torch.cov(codes.T) + 1e-5 * torch.eye(codes.shape[1], device=codes.device)
        self.prior = (codes.mean(0), torch.linalg.cholesky(cov))

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = super().latent(n, generator)
        if self.prior is None:
            return eps
        mean, chol = self.prior
        return (mean + eps.double() @ chol.T).float()
