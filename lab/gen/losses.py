"""The generative objectives as pure functions of scores, images and codes.

A discriminator's scores are logits (or a critic's real numbers), one per image; the GAN losses
are means over the batch. ``tests/test_gen_losses.py`` pins every function by hand-computed
cases. The generator's step needs the scores of images generated after the discriminator's
step, so each GAN objective is a pair: the discriminator's loss and the generator's.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def nonsaturating_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss of Goodfellow et al. (2014), on logits s = D(.):

    L_D = -E[log σ(D(x))] - E[log(1 - σ(D(G(z))))] = E[softplus(-D(x))] + E[softplus(D(G(z)))]
    """
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()


def nonsaturating_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss (Goodfellow et al. 2014, as DCGAN trains it):
    maximise log D(G(z)) rather than minimise log(1 - D(G(z))), whose gradient vanishes early.

    L_G = -E[log σ(D(G(z)))] = E[softplus(-D(G(z)))]
    """
    return F.softplus(-fake_scores).mean()


def wgan_gp_loss(
    real_scores: torch.Tensor, fake_scores: torch.Tensor, penalty: torch.Tensor, weight: float
) -> torch.Tensor:
    """The critic's loss of WGAN-GP (Gulrajani et al. 2017, Algorithm 1):

    L_D = E[D(G(z))] - E[D(x)] + λ E[(||∇D(x̂)|| - 1)^2],  penalty = the expectation, λ = weight
    """
    return fake_scores.mean() - real_scores.mean() + weight * penalty


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's loss of a Wasserstein GAN: L_G = -E[D(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """E[(||∇D(x̂)||_2 - 1)^2] at x̂ = α x + (1 - α) x̃, one α in [0, 1] per image.

    In fp32 whatever the precision (the critic's scores are cast up before the gradient), and
    differentiable (``create_graph``), so the critic's step descends it.
    """
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(mixed).float().sum()
    (grad,) = torch.autograd.grad(score, mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E[||∇D(x)||²] on real images x: R1 (Mescheder et al. 2018), weighted by γ/2 in the loss.

    In fp32 whatever the precision, and differentiable (``create_graph``), as
    ``gradient_penalty`` is.
    """
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(real).float().sum(), real, create_graph=True)
    return grad.flatten(1).square().sum(dim=1).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-row KL(N(mu, exp(logvar)) || N(0, I)) of a diagonal Gaussian, in nats:

    KL = -1/2 Σ_j (1 + log σ_j^2 - mu_j^2 - σ_j^2)   (Kingma & Welling 2014, Appendix B)
    """
    return -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)
