"""A Bernoulli restricted Boltzmann machine's maths as pure functions of (W, b, c) and states.

Energy E(v, h) = -bᵀv - cᵀh - vᵀWh over binary visible v [V] and hidden h [H]; summing h out
gives the free energy F(v) = -bᵀv - Σ_j softplus(c_j + vᵀW_j), with p(v) ∝ exp(-F(v)).
Both conditionals factorise, p(h_j = 1 | v) = σ(c_j + vᵀW_j) and p(v_i = 1 | h) = σ(b_i + W_i h),
which is what makes block Gibbs sampling (all h, then all v) exact per step.
``tests/test_rbm.py`` pins each function on a 3 × 2 machine by hand.

sklearn's ``BernoulliRBM`` does PCD-1 in numpy; the lab's runner wants torch tensors on its
device, CD-k, persistent chains in the checkpoint and stacking, hence these few lines.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Gradient(NamedTuple):
    """An estimate of ∂ mean log p(v) / ∂ (W, b, c): ascend it."""

    W: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor


def free_energy(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
    """F(v) = -bᵀv - Σ_j softplus(c_j + vᵀW_j), one per row of ``v`` [N, V]."""
    return -v @ b - F.softplus(v @ W + c).sum(dim=1)


def hidden_probs(v: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """p(h = 1 | v) = σ(c + vW), [N, H]."""
    return torch.sigmoid(v @ W + c)


def visible_probs(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """p(v = 1 | h) = σ(b + hWᵀ), [N, V]."""
    return torch.sigmoid(h @ W.T + b)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary states drawn with probabilities ``p``."""
    return (torch.rand(p.shape, generator=generator, device=p.device) < p).to(p.dtype)


def gibbs(
    v: torch.Tensor, W, b, c, steps: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` rounds of block Gibbs sampling h ~ p(h | v), v ~ p(v | h) from ``v``: the
    last visible states and the p(v | h) they were drawn from (the mean-field image)."""
    probs = v
    for _ in range(steps):
        h = bernoulli(hidden_probs(v, W, c), generator)
        probs = visible_probs(h, W, b)
        v = bernoulli(probs, generator)
    return v, probs


def cd_gradient(data: torch.Tensor, model: torch.Tensor, W, c) -> Gradient:
    """The contrastive-divergence estimate of the log-likelihood gradient: the data's minus
    the chains' statistics, with p(h | v) in place of sampled h (Hinton 2002; Tieleman 2008's
    PCD only changes where ``model``'s states come from):

    ∂W = <v p(h|v)ᵀ>_data - <v p(h|v)ᵀ>_model,  ∂b = <v>_data - <v>_model,
    ∂c = <p(h|v)>_data - <p(h|v)>_model
    """
    h_data, h_model = hidden_probs(data, W, c), hidden_probs(model, W, c)
    return Gradient(
        W=(data.T @ h_data) / len(data) - (model.T @ h_model) / len(model),
        b=data.mean(dim=0) - model.mean(dim=0),
        c=h_data.mean(dim=0) - h_model.mean(dim=0),
    )


def pseudo_log_likelihood(v: torch.Tensor, W, b, c, units: torch.Tensor | None = None):
    """Σ_i log p(v_i | v_-i) = Σ_i log σ(F(v with bit i flipped) - F(v)), one per row of ``v``.

    ``units`` [N]: one bit per row to flip, scaled by V (the stochastic estimate sklearn's
    ``score_samples`` logs); None sums over every bit exactly.
    """
    n, size = v.shape
    energy = free_energy(v, W, b, c)
    if units is not None:
        flipped = v.clone()
        rows = torch.arange(n, device=v.device)
        flipped[rows, units] = 1 - flipped[rows, units]
        return size * F.logsigmoid(free_energy(flipped, W, b, c) - energy)
    total = torch.zeros(n, device=v.device)
    for i in range(size):  # V free energies of N rows each: a few ms at V = 256
        flipped = v.clone()
        flipped[:, i] = 1 - flipped[:, i]
        total += F.logsigmoid(free_energy(flipped, W, b, c) - energy)
    return total


class RBMLayer(nn.Module):
    """One RBM's parameters; weights drawn from N(0, 0.01²), biases zero (Hinton 2010's
    practical guide, §8)."""

    def __init__(self, visible: int, hidden: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(visible, hidden) * 0.01)
        self.b = nn.Parameter(torch.zeros(visible))
        self.c = nn.Parameter(torch.zeros(hidden))

    def up(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary hidden states h ~ p(h | v): the data the next RBM of a stack trains on."""
        return bernoulli(hidden_probs(v, self.W, self.c), generator)

    def down(self, h: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h): the generative (top-down) pass of a deep belief net."""
        return visible_probs(h, self.W, self.b)

    def gibbs(self, v, steps: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        return gibbs(v, self.W, self.b, self.c, steps, generator)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return free_energy(v, self.W, self.b, self.c)
