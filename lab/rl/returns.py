"""Return maths as pure functions: n-step returns, TD targets, exploration schedules."""

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


def linear_schedule(step: int, start: float, end: float, duration: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``duration``, constant after."""
    if duration <= 0:
        return end
    fraction = min(step / duration, 1.0)
    return start + fraction * (end - start)


def annealed_lr(lr: float, anneal: bool, step: int, total_steps: int) -> float:
    """``lr``, or with ``anneal`` linearly from ``lr`` at step 0 to 0 at ``total_steps``."""
    return linear_schedule(step, lr, 0.0, total_steps) if anneal else lr


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
