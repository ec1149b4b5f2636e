"""V-trace (lab/rl/returns.py): a hand-computed case, clipping, episode ends, and the on-policy
limit where it is the n-step return."""

import math

import pytest
import torch

from lab.rl.returns import nstep_returns, vtrace


def _column(*values: float) -> torch.Tensor:
    return torch.tensor(values)[:, None]  # (T, N=1)


def test_vtrace_matches_a_hand_computed_off_policy_case():
    # γ = 0.5, ρ̄ = 1, c̄ = 0.5; ratios π/μ = 2, 0.5, 1 -> ρ = 1, 0.5, 1 and c = 0.5, 0.5, 0.5.
    log_rhos = _column(math.log(2.0), math.log(0.5), 0.0)
    rewards = _column(1.0, 0.0, 2.0)
    values = _column(1.0, 2.0, 4.0)
    next_values = _column(2.0, 4.0, 8.0)  # V(x_1), V(x_2), bootstrap V(x_3)
    cuts = torch.zeros(3, 1, dtype=torch.bool)
    vs, adv = vtrace(log_rhos, rewards, values, next_values, cuts, 0.5, 1.0, 0.5)
    # δ = ρ (r + γ V' − V): δ_0 = 1·(1 + 1 − 1) = 1, δ_1 = 0.5·(0 + 2 − 2) = 0,
    # δ_2 = 1·(2 + 4 − 4) = 2.
    # v_2 − V_2 = 2; v_1 − V_1 = 0 + 0.5·0.5·2 = 0.5; v_0 − V_0 = 1 + 0.5·0.5·0.5 = 1.125.
    assert vs[:, 0].tolist() == pytest.approx([2.125, 2.5, 6.0])
    # A = ρ (r + γ v_{t+1} − V): A_0 = 1·(1 + 0.5·2.5 − 1) = 1.25,
    # A_1 = 0.5·(0 + 0.5·6 − 2) = 0.5, A_2 = 1·(2 + 0.5·8 − 4) = 2 (v_3 = V(x_3), the bootstrap).
    assert adv[:, 0].tolist() == pytest.approx([1.25, 0.5, 2.0])


def test_vtrace_restarts_at_an_episode_end_and_bootstraps_a_truncation():
    # Step 0 ends its episode: terminated (next value 0) in env 0, truncated in env 1 (next
    # value V of the final observation, 3). Step 1 belongs to the next episode.
    log_rhos = torch.zeros(2, 2)
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    values = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    next_values = torch.tensor([[0.0, 3.0], [10.0, 10.0]])
    cuts = torch.tensor([[True, True], [False, False]])
    vs, adv = vtrace(log_rhos, rewards, values, next_values, cuts, 0.9, 1.0, 1.0)
    assert vs[0].tolist() == pytest.approx([1.0, 1.0 + 0.9 * 3.0])  # nothing from step 1
    assert adv[0].tolist() == pytest.approx([1.0 - 5.0, 1.0 + 2.7 - 5.0])
    assert vs[1].tolist() == pytest.approx([1.0 + 9.0, 1.0 + 9.0])


def test_vtrace_on_policy_is_the_nstep_return():
    generator = torch.Generator().manual_seed(0)
    steps, n = 7, 5
    rewards = torch.randn(steps, n, generator=generator)
    values = torch.randn(steps, n, generator=generator)
    next_values = torch.randn(steps, n, generator=generator)
    cuts = torch.rand(steps, n, generator=generator) < 0.3
    on_policy = torch.zeros(steps, n)
    vs, adv = vtrace(on_policy, rewards, values, next_values, cuts, 0.99, 1.0, 1.0)
    returns = nstep_returns(rewards, next_values, cuts, 0.99)
    torch.testing.assert_close(vs, returns)
    # A_t = r_t + γ v_{t+1} − V(x_t): the one-step form of the same return.
    torch.testing.assert_close(adv, returns - values)


def test_vtrace_clips_large_ratios_and_keeps_small_ones():
    rewards, values, next_values = _column(1.0), _column(0.0), _column(0.0)
    cuts = torch.zeros(1, 1, dtype=torch.bool)
    big, _ = vtrace(_column(math.log(5.0)), rewards, values, next_values, cuts, 0.9, 1.0, 1.0)
    small, _ = vtrace(_column(math.log(0.2)), rewards, values, next_values, cuts, 0.9, 1.0, 1.0)
    assert big.item() == pytest.approx(1.0)  # ρ = min(ρ̄, 5) = 1
    assert small.item() == pytest.approx(0.2)
