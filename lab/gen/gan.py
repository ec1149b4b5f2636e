"""GANs: DCGAN with the non-saturating loss, and WGAN-GP, which swaps in a critic's objective.

Both train ``n_critic`` discriminator steps, then one generator step, and evaluate an EMA of
the generator's weights. The objectives are the pure functions of ``lab/gen/losses.py``.
"""

import torch
from torch.optim.swa_utils import AveragedModel

from lab.compute import Compute
from lab.config import require_positive
from lab.errors import ConfigError
from lab.gen.augment import DiffAugment
from lab.gen.losses import (
    gradient_penalty,
    nonsaturating_generator_loss,
    nonsaturating_loss,
    wasserstein_generator_loss,
    wgan_gp_loss,
)
from lab.gen.models import Batches, GenerativeModel
from lab.gen.nets import ConvDecoder, ConvEncoder
from lab.schedules import linear_schedule


def _ema_with_warmup(decay: float):
    """EMA whose decay ramps up as (1 + n) / (10 + n): early averages are not stuck at init."""

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return averaged * d + current * (1 - d)

    return average


class Adversarial(GenerativeModel):
    """What every GAN shares: a discriminator that sees every image, real or generated, through
    the ``model.augment`` transforms (``lab/gen/augment.py``), so the penalties on its
    gradients (WGAN-GP's, R1) are on the same function D∘T that the losses train."""

    augment: DiffAugment
    updates: int  # generator steps taken
    total_steps: int | None  # generator steps in the run (model.total_steps)
    lr_anneal: bool

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image of D(T(x)), in fp32 whatever the precision."""
        x = self.augment(x)
        with self.compute.autocast():
            return self.nets["discriminator"](x).float().squeeze(1)

    def _schedule(self, total_steps: int | None, lr_anneal: bool) -> None:
        """Call after making the optimizers: each remembers its rate as ``initial_lr``."""
        if lr_anneal:
            if total_steps is None:
                raise ConfigError("model.lr_anneal=true needs model.total_steps")
            require_positive("model", total_steps=total_steps)
        self.total_steps, self.lr_anneal, self.updates = total_steps, bool(lr_anneal), 0
        self._remember_rates()

    def _remember_rates(self) -> None:
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])

    def _count_update(self) -> None:
        """One generator step done; with ``lr_anneal`` every net's rate falls linearly from
        its ``initial_lr`` to 0 at ``total_steps`` (as WGAN-GP's CIFAR-10 ResNet code does)."""
        self.updates += 1
        if self.lr_anneal:
            for optimizer in self.optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] = linear_schedule(
                        self.updates, group["initial_lr"], 0.0, self.total_steps
                    )

    def state_dict(self) -> dict:
        return super().state_dict() | {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        # GAN checkpoints from before lr_anneal have neither the count nor ``initial_lr``.
        self.updates = state.get("updates", 0)
        self._remember_rates()


class GAN(Adversarial):
    """DCGAN (Radford et al. 2016): a conv generator against a conv discriminator that scores
    each image with one logit, trained with the non-saturating loss.

    ``lr`` is the generator's learning rate and ``d_lr`` the discriminator's (or critic's);
    ``d_lr: null`` uses ``lr``. ``ema``: the decay of the generator's weight average that
    evaluation samples from (null: sample from the generator itself). ``augment``: the
    DiffAugment transforms the discriminator sees images through (empty: none).
    """

    headline_metric = "train/d_loss"

    def __init__(
        self,
        shape,
        compute: Compute,
        z_dim: int = 64,
        width: int = 64,
        lr: float = 2e-4,
        d_lr: float | None = None,
        betas=(0.5, 0.999),
        n_critic: int = 1,
        d_norm: str = "batch",
        ema: float | None = 0.999,
        augment: list[str] | None = None,
        channels_last: bool = True,
        total_steps: int | None = None,
        lr_anneal: bool = False,
    ):
        super().__init__(shape, compute, z_dim, width, channels_last)
        require_positive("model", n_critic=n_critic)
        self.augment = DiffAugment(augment)
        if ema is not None and not 0 < ema < 1:
            raise ConfigError(f"model.ema={ema}: use a decay in (0, 1), or null for no EMA")
        self.n_critic = n_critic
        self._place(
            generator=ConvDecoder(z_dim, self.shape, width),
            discriminator=ConvEncoder(self.shape, 1, width, d_norm),
        )
        self.optimizers = {
            "generator": self._adam("generator", lr, betas),
            "discriminator": self._adam("discriminator", d_lr or lr, betas),
        }
        self._schedule(total_steps, lr_anneal)
        self.ema = None
        if ema:
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

    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss on scores ``d_real``, ``d_fake`` of ``real``, ``fake``, and
        any metrics of its own."""
        return nonsaturating_loss(d_real, d_fake), {}

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return nonsaturating_generator_loss(fake_scores)

    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        """n_critic discriminator steps, then one generator step; detached device scalars."""
        D = self.nets["discriminator"]
        for _ in range(self.n_critic):
            real = batches()
            with torch.no_grad():
                fake = self.generate(self.latent(len(real)))
            d_real, d_fake = self._critic(real), self._critic(fake)
            d_loss, d_metrics = self.discriminator_loss(real, fake, d_real, d_fake)
            self._step(d_loss, "discriminator")
        D.requires_grad_(False)  # the generator's step needs no discriminator gradients
        g_loss = self.generator_loss(self._critic(self.generate(self.latent(len(real)))))
        self._step(g_loss, "generator")
        D.requires_grad_(True)
        self._count_update()
        if self.ema is not None:
            self.ema.update_parameters(self.nets["generator"])
        metrics = {
            "train/d_loss": d_loss,
            "train/g_loss": g_loss,
            "train/d_real": d_real.mean(),
            "train/d_fake": d_fake.mean(),
            **d_metrics,
        }
        return {key: value.detach() for key, value in metrics.items()}


class WGANGP(GAN):
    """WGAN-GP (Gulrajani et al. 2017): the discriminator is a critic of real numbers, held
    near 1-Lipschitz by a gradient penalty of weight ``gp_weight``.

    The penalty is per image, so the critic normalises per sample (``d_norm=layer`` or
    ``none``), never over the batch. lr, betas, n_critic and gp_weight default to the paper's
    (Algorithm 1).
    """

    headline_metric = "train/wasserstein"

    def __init__(
        self,
        shape,
        compute: Compute,
        z_dim: int = 64,
        width: int = 64,
        lr: float = 1e-4,
        d_lr: float | None = None,
        betas=(0.0, 0.9),
        n_critic: int = 5,
        gp_weight: float = 10.0,
        d_norm: str = "layer",
        ema: float | None = 0.999,
        augment: list[str] | None = None,
        channels_last: bool = True,
        total_steps: int | None = None,
        lr_anneal: bool = False,
    ):
        if d_norm == "batch":
            raise ConfigError(
                "model.d_norm=batch with wgan_gp: the gradient penalty is per sample; "
                "use model.d_norm=layer, spectral or none"
            )
        super().__init__(
            shape,
            compute,
            z_dim,
            width,
            lr,
            d_lr,
            betas,
            n_critic,
            d_norm,
            ema,
            augment,
            channels_last,
            total_steps,
            lr_anneal,
        )
        self.gp_weight = gp_weight

    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
        penalty = gradient_penalty(self._critic, real, fake, alpha)
        loss = wgan_gp_loss(d_real, d_fake, penalty, self.gp_weight)
        metrics = {
            "train/gradient_penalty": penalty,
            "train/wasserstein": d_real.mean() - d_fake.mean(),
        }
        return loss, metrics

    def generator_loss(self, fake_scores: torch.Tensor) -> torch.Tensor:
        return wasserstein_generator_loss(fake_scores)
