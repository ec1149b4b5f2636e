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
