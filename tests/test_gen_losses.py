"""The generative objectives against hand-computed cases (lab/gen/losses.py)."""

import math

import pytest
import torch

from lab.gen.losses import (
    gaussian_kl,
    gradient_penalty,
    nonsaturating_generator_loss,
    nonsaturating_loss,
    wasserstein_generator_loss,
    wgan_gp_loss,
)

LN3 = math.log(3.0)


def test_nonsaturating_loss_by_hand():
    # D(x) = σ(ln 3) = 3/4 on the real image, D(G(z)) = σ(-ln 3) = 1/4 on the fake one:
    # L_D = -log(3/4) - log(1 - 1/4) = 2 log(4/3); the generator's -log D(G(z)) = log 4.
    real, fake = torch.tensor([LN3]), torch.tensor([-LN3])
    assert float(nonsaturating_loss(real, fake)) == pytest.approx(2 * math.log(4 / 3))
    assert float(nonsaturating_generator_loss(fake)) == pytest.approx(math.log(4))
    # An undecided discriminator (logit 0, D = 1/2) pays log 2 on each side.
    zeros = torch.zeros(5)
    assert float(nonsaturating_loss(zeros, zeros)) == pytest.approx(2 * math.log(2))


def test_nonsaturating_generator_loss_keeps_its_gradient_when_d_is_sure():
    # The point of the non-saturating loss: at D(G(z)) ≈ 0 the minimax loss log(1 - D(G(z)))
    # has gradient ≈ -σ(s) ≈ 0 in the logit s, this one ≈ -1.
    s = torch.tensor([-10.0], requires_grad=True)
    nonsaturating_generator_loss(s).backward()
    assert float(s.grad) == pytest.approx(-1.0, abs=1e-4)


def test_wgan_gp_loss_by_hand():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    # E[D(fake)] - E[D(real)] + λ penalty = -1 - 2 + 10 * 0.5
    assert float(wgan_gp_loss(real, fake, torch.tensor(0.5), 10.0)) == pytest.approx(2.0)
    assert float(wasserstein_generator_loss(fake)) == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic_is_its_slope_minus_one_squared():
    # D(x) = <w, x> has gradient w everywhere: penalty (||w|| - 1)^2 = (5 - 1)^2 with w = (3, 4).
    w = torch.tensor([3.0, 4.0]).reshape(1, 1, 1, 2)

    def critic(x):
        return (x * w).flatten(1).sum(1, keepdim=True)

    real, fake = torch.randn(3, 1, 1, 2), torch.randn(3, 1, 1, 2)
    penalty = gradient_penalty(critic, real, fake, torch.rand(3, 1, 1, 1))
    assert penalty.item() == pytest.approx(16.0)


def test_gradient_penalty_is_taken_at_the_interpolates():
    # D(x) = ||x||^2 / 2 has gradient x: at x̂ = α x + (1 - α) x̃ the norm is ||x̂||.
    def critic(x):
        return 0.5 * x.flatten(1).square().sum(1, keepdim=True)

    real = torch.tensor([[3.0, 0.0], [0.0, 2.0]]).reshape(2, 1, 1, 2)
    fake = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    alpha = torch.tensor([0.5, 0.25]).reshape(2, 1, 1, 1)
    # x̂ = (2, 0) with norm 2, and (0, 0.5) with norm 0.5: ((2 - 1)^2 + (0.5 - 1)^2) / 2
    penalty = gradient_penalty(critic, real, fake, alpha)
    assert penalty.item() == pytest.approx((1.0 + 0.25) / 2)
    # Differentiable, so the critic's step descends it (create_graph).
    assert penalty.requires_grad


def test_gaussian_kl_by_hand():
    # KL(N(mu, σ^2) || N(0, 1)) = (σ^2 + mu^2 - 1) / 2 - log σ, summed over the dimensions.
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    expected = [0.0, (4 + 1 - 1) / 2 - math.log(2) + (1 + 4 - 1) / 2]
    assert gaussian_kl(mu, logvar).tolist() == pytest.approx(expected)
