"""Uniform experience replay, and the n-step collector that feeds it from a vector env."""

from collections import deque
from typing import NamedTuple

import numpy as np
import torch

from lab.rl.returns import discounted_return


class Batch(NamedTuple):
    """Transitions (s, a, R, s', discount) with R an n-step return and discount γⁿ or 0."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    discounts: torch.Tensor


class ReplayBuffer:
    """A ring buffer of transitions in preallocated numpy arrays, sampled uniformly."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "discounts")

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype, seed: int):
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, actions, rewards, next_obs, discounts) -> None:
        """Add a batch of k transitions (arrays with a leading dimension k)."""
        k = len(actions)
        idx = (self.pos + np.arange(k)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.discounts[idx] = next_obs, discounts
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> Batch:
        idx = self.rng.integers(0, self.size, size=batch_size)
        tensors = (torch.from_numpy(getattr(self, f)[idx]) for f in self.FIELDS)
        return Batch(*(t.to(device, non_blocking=True) for t in tensors))

    def state_dict(self) -> dict:
        state = {f: torch.from_numpy(getattr(self, f)[: self.size].copy()) for f in self.FIELDS}
        return state | {"pos": self.pos, "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        size = state["size"]
        if size > self.capacity:
            raise ValueError(f"checkpoint buffer holds {size} > capacity {self.capacity}")
        for f in self.FIELDS:
            getattr(self, f)[:size] = state[f].numpy()
        self.pos, self.size = state["pos"], size
        self.rng.bit_generator.state = state["rng"]


class NStepCollector:
    """Turns each sub-env's stream of 1-step transitions into n-step ones.

    A transition leaves once it has n rewards behind it, or when its episode ends: at
    termination the discount is 0; at truncation it is γᵏ and the target bootstraps from the
    last observation, which is the true final one (Gymnasium's next-step autoreset).
    """

    def __init__(self, num_envs: int, n: int, gamma: float):
        self.n, self.gamma = n, gamma
        self.pending: list[deque] = [deque() for _ in range(num_envs)]

    def push(self, obs, actions, rewards, next_obs, terminated, truncated, valid) -> tuple | None:
        """One vector step; ``valid`` is False for sub-envs that were only resetting."""
        out = []
        for e in np.flatnonzero(valid):
            queue = self.pending[e]
            queue.append((obs[e], actions[e], rewards[e]))
            if terminated[e] or truncated[e]:
                discount = 0.0 if terminated[e] else None
                while queue:
                    out.append(self._emit(queue, next_obs[e], discount))
                    queue.popleft()
            elif len(queue) == self.n:
                out.append(self._emit(queue, next_obs[e], None))
                queue.popleft()
        if not out:
            return None
        return tuple(np.stack(column) for column in zip(*out, strict=True))

    def _emit(self, queue: deque, next_obs, discount: float | None) -> tuple:
        first_obs, first_action, _ = queue[0]
        ret = discounted_return([r for _, _, r in queue], self.gamma)
        if discount is None:
            discount = self.gamma ** len(queue)
        return first_obs, first_action, np.float32(ret), next_obs, np.float32(discount)

    def reset(self) -> None:
        for queue in self.pending:
            queue.clear()
