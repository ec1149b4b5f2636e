"""Return maths as pure functions: n-step returns, TD targets (schedules: ``lab/schedules.py``)."""

from collections.abc import Sequence

import torch


def discounted_return(rewards: Sequence[float], gamma: float) -> float:
    """r_0 + γ r_1 + γ² r_2 + …"""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + gamma * total
    return total


def td_target(
    reward: torch.Tensor, discount: torch.Tensor, next_value: torch.Tensor
) -> torch.Tensor:
    """y = R + discount · V(s'), where discount is γⁿ, or 0 when the episode terminated.

    Truncation (a time limit) is not termination: its discount stays γⁿ so the target bootstraps.
    """
    return reward + discount * next_value


def double_q_value(next_q_online: torch.Tensor, next_q_target: torch.Tensor) -> torch.Tensor:
    """Double DQN (van Hasselt et al. 2016): the online net picks a', the target net scores it."""
    best = next_q_online.argmax(dim=1, keepdim=True)
    return next_q_target.gather(1, best).squeeze(1)


def nstep_returns(
    rewards: torch.Tensor, next_values: torch.Tensor, cuts: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Bootstrapped discounted returns of a (T, N) rollout, computed backwards.

    ``next_values[t]`` is V of the state after step t: 0 if the episode terminated there, V of
    the true final observation if it was truncated, V(s_T) at the rollout's end. ``cuts[t]``
    marks an episode ending at step t (termination or truncation): the return restarts there.
    """
    returns = torch.empty_like(rewards)
    running = next_values[-1]
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * torch.where(cuts[t], next_values[t], running)
        returns[t] = running
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    cuts: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) of a (T, N) rollout.

    δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V(s_{t+1}) from ``next_values`` (see nstep_returns);
    A_t = δ_t + γλ A_{t+1}, not carried across an episode's end. λ = 1 gives n-step returns − V.
    """
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        running = delta + gamma * lam * (~cuts[t]) * running
        advantages[t] = running
    return advantages


def vtrace(
    log_rhos: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    cuts: torch.Tensor,
    gamma: float,
    rho_bar: float,
    c_bar: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets and policy-gradient advantages (Espeholt et al. 2018) of a (T, N) rollout.

    ``log_rhos`` = log π(a_t|x_t) − log μ(a_t|x_t) (learner over behaviour policy); ρ_t =
    min(ρ̄, e^log_rho), c_t = min(c̄, e^log_rho). With δ_t = ρ_t (r_t + γ V(x_{t+1}) − V(x_t)):

        v_t = V(x_t) + δ_t + γ c_t (v_{t+1} − V(x_{t+1}))
        A_t = ρ_t (r_t + γ v_{t+1} − V(x_t))

    with V(x_{t+1}) from ``next_values`` and ``cuts`` as in nstep_returns: v_{t+1} = V(x_{t+1})
    after a cut (the trace does not cross an episode's end) and at the rollout's end. On-policy with
    ρ̄, c̄ ≥ 1, v_t is the n-step return and A_t = v_t − V(x_t).
    """
    ratios = log_rhos.exp()
    rhos, cs = ratios.clamp(max=rho_bar), ratios.clamp(max=c_bar)
    deltas = rhos * (rewards + gamma * next_values - values)
    vs = torch.empty_like(rewards)
    vs_next = torch.empty_like(rewards)
    following = next_values[-1]  # v_{t+1}: at the rollout's end, the bootstrap V(x_T)
    for t in reversed(range(rewards.shape[0])):
        following = torch.where(cuts[t], next_values[t], following)
        vs_next[t] = following
        following = values[t] + deltas[t] + gamma * cs[t] * (following - next_values[t])
        vs[t] = following
    advantages = rhos * (rewards + gamma * vs_next - values)
    return vs, advantages
