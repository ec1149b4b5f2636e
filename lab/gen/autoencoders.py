"""An autoencoder, and the VAE: an autoencoder whose codes are Gaussian, plus a KL term.

Both decode codes to Bernoulli logits over pixels in [0, 1] and report the reconstruction
term in nats per image. The autoencoder samples by decoding draws from a Gaussian fitted to
its training codes; the VAE's prior is N(0, I), the one its KL term pulls the codes towards.
"""

import torch
import torch.nn.functional as F

from lab.compute import Compute
from lab.errors import ConfigError
from lab.gen.losses import gaussian_kl
from lab.gen.models import Batches, Figures, GenerativeModel
from lab.gen.nets import ConvDecoder, ConvEncoder


class Autoencoder(GenerativeModel):
    """Deterministic conv encoder and decoder trained on the reconstruction term alone."""

    headline_metric = "train/recon"
    outputs_per_code = 1  # numbers the encoder gives per code dimension

    def __init__(
        self,
        shape,
        compute: Compute,
        z_dim: int = 16,
        width: int = 64,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        channels_last: bool = True,
    ):
        super().__init__(shape, compute, z_dim, width, channels_last)
        self._place(
            encoder=ConvEncoder(self.shape, self.outputs_per_code * z_dim, width, norm="batch"),
            decoder=ConvDecoder(z_dim, self.shape, width),
        )
        params = [p for net in self.nets.values() for p in net.parameters()]
        self.optimizers = {"model": torch.optim.Adam(params, lr=lr, betas=tuple(betas))}
        self.prior: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, Cholesky factor)

    def _encoder(self, x: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.nets["encoder"](x).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each image of ``x`` (float, [-1, 1])."""
        return self._encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        with self.compute.autocast():
            return self.nets["decoder"](z).float()

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z)) * 2 - 1

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image, in nats: Bernoulli pixels with probabilities (x + 1) / 2."""
        target = (x + 1) / 2
        return F.binary_cross_entropy_with_logits(
            self.decode_logits(z), target, reduction="none"
        ).sum(dim=(1, 2, 3))

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Batch means of the per-image terms, and the loss that is minimised."""
        recon = self.reconstruction(self.encode(x), x).mean()
        return {"recon": recon, "loss": recon}

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        terms = self.terms(batches())
        self._step(terms["loss"], "model")
        return {f"train/{k}": v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def held_out(self, x: torch.Tensor) -> dict[str, float]:
        """Per-image terms over ``x`` (not the loss), in chunks: MNIST's test set is 10k."""
        sums: dict[str, float] = {}
        for part in x.split(1000):
            for key, value in self.terms(part).items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(part)
        return {f"eval/{key}": total / len(x) for key, total in sums.items() if key != "loss"}

    @torch.no_grad()
    def figures(self, x: torch.Tensor) -> Figures:
        """16 originals over their reconstructions, and walks between the codes of 8 pairs."""
        x = x[:16]
        codes = self.encode(x)
        weights = torch.linspace(0, 1, 10, device=codes.device)[None, :, None]
        path = codes[:8, None] * (1 - weights) + codes[8:16, None] * weights  # [8, 10, z]
        return {
            "reconstructions": (torch.cat([x, self.generate(codes)]), 16),
            "interpolations": (self.generate(path.flatten(0, 1)), 10),
        }

    @torch.no_grad()
    def fit_prior(self, images: torch.Tensor) -> None:
        """Mean and Cholesky factor of the codes of ``images`` (float, [-1, 1])."""
        codes = torch.cat([self.encode(x) for x in images.split(512)]).double()
        cov = torch.cov(codes.T) + 1e-5 * torch.eye(codes.shape[1], device=codes.device)
        self.prior = (codes.mean(0), torch.linalg.cholesky(cov))

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = super().latent(n, generator)
        if self.prior is None:
            return eps
        mean, chol = self.prior
        return (mean + eps.double() @ chol.T).float()

    def state_dict(self) -> dict:
        return super().state_dict() | {"prior": self.prior}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.prior = state.get("prior")


class VAE(Autoencoder):
    """Kingma & Welling (2014): a Gaussian encoder q(z | x) = N(mu, σ^2), codes drawn by
    reparameterisation, and a KL term to the N(0, I) prior; ``beta`` > 1 gives a β-VAE.

    The loss is reconstruction + beta * KL; ``train/elbo`` is always the true ELBO (beta = 1),
    in nats per image, so runs with different betas compare.
    """

    headline_metric = "train/elbo"
    outputs_per_code = 2  # a mean and a log-variance

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
    ):
        if beta < 0:
            raise ConfigError(f"model.beta={beta}: must be >= 0")
        super().__init__(shape, compute, z_dim, width, lr, betas, channels_last)
        self.beta = beta

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x); the log-variance is clamped to [-12, 8]."""
        mu, logvar = self._encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the code reconstructions and latent walks use."""
        return self.posterior(x)[0]

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon, kl = self.reconstruction(z, x), gaussian_kl(mu, logvar)
        return {"recon": recon.mean(), "kl": kl.mean(), "loss": (recon + self.beta * kl).mean()}

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        metrics = super().update(batches)
        return metrics | {"train/elbo": -(metrics["train/recon"] + metrics["train/kl"])}

    def held_out(self, x: torch.Tensor) -> dict[str, float]:
        metrics = super().held_out(x)
        return metrics | {"eval/elbo": -(metrics["eval/recon"] + metrics["eval/kl"])}

    def fit_prior(self, images: torch.Tensor) -> None:
        """Nothing to fit: the prior is N(0, I)."""
