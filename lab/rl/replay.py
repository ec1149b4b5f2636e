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


class Window(NamedTuple):
    """Each row's last K observations up to a step (N, K, ...), zero before its episode began,
    and which of them are real (N, K): what a windowed torso (``net=transformer``) reads."""

    obs: torch.Tensor
    valid: torch.Tensor


class ObsHistory:
    """Every observation the envs gave, under increasing ids, each linked to the step before
    it in its episode (-1 at an episode's start); windows follow the links back.

    A ring of ``capacity``: an id older than the last ``capacity`` is gone, and a window
    stops there as it does at an episode's start.
    """

    def __init__(self, capacity: int, obs_shape, obs_dtype, num_envs: int, context: int):
        self.capacity, self.context = capacity, context
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.prev = np.full(capacity, -1, dtype=np.int64)
        self.written = 0
        self.last = np.full(num_envs, -1, dtype=np.int64)  # each env's latest id

    def record(self, obs: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Store one observation per env (``starts``: it begins an episode); returns their ids."""
        ids = self.written + np.arange(len(obs))
        slots = ids % self.capacity
        self.obs[slots] = obs
        self.prev[slots] = np.where(starts, -1, self.last)
        self.last, self.written = ids, self.written + len(obs)
        return ids

    def windows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``context`` observations up to each id (oldest first) and which are real."""
        oldest = max(0, self.written - self.capacity)
        taken = np.full((len(ids), self.context), -1, dtype=np.int64)
        current = np.asarray(ids, dtype=np.int64)
        for k in range(self.context - 1, -1, -1):
            live = current >= oldest
            taken[:, k] = np.where(live, current, -1)
            current = np.where(live, self.prev[current % self.capacity], -1)
        valid = taken >= 0
        obs = self.obs[taken % self.capacity]
        obs[~valid] = 0
        return obs, valid

    def state_dict(self) -> dict:
        stored = min(self.written, self.capacity)
        return {
            "obs": torch.from_numpy(self.obs[:stored].copy()),
            "prev": torch.from_numpy(self.prev[:stored].copy()),
            "written": self.written,
            "last": torch.from_numpy(self.last.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        stored = len(state["prev"])
        if stored > self.capacity:
            raise ValueError(f"checkpoint history holds {stored} > capacity {self.capacity}")
        self.obs[:stored], self.prev[:stored] = state["obs"].numpy(), state["prev"].numpy()
        self.written, self.last = state["written"], state["last"].numpy().copy()


class WindowReplay:
    """Uniform replay for a windowed torso: transitions hold ids into an ``ObsHistory`` and a
    sampled batch's ``obs``/``next_obs`` are ``Window``s built from it at sampling time, so each
    observation is stored once however long the window."""

    def __init__(
        self, capacity: int, obs_space, num_envs: int, context: int, n_step: int, seed: int
    ):
        self.transitions = ReplayBuffer(capacity, (), np.dtype(np.int64), seed)
        # A transition's ids stay live: each env step stores one observation, an autoreset
        # step one more per episode (<= 2 per transition), plus the steps still in flight.
        room = 2 * capacity + num_envs * (n_step + context + 2)
        self.history = ObsHistory(room, obs_space.shape, obs_space.dtype, num_envs, context)

    def __len__(self) -> int:
        return len(self.transitions)

    def add(self, obs_ids, actions, rewards, next_obs_ids, discounts) -> None:
        self.transitions.add(obs_ids, actions, rewards, next_obs_ids, discounts)

    def window(self, ids: np.ndarray, device: torch.device) -> Window:
        obs, valid = self.history.windows(ids)
        return Window(torch.from_numpy(obs).to(device), torch.from_numpy(valid).to(device))

    def sample(self, batch_size: int, device: torch.device) -> Batch:
        batch = self.transitions.sample(batch_size, torch.device("cpu"))
        return batch._replace(
            obs=self.window(batch.obs.numpy(), device),
            actions=batch.actions.to(device),
            rewards=batch.rewards.to(device),
            next_obs=self.window(batch.next_obs.numpy(), device),
            discounts=batch.discounts.to(device),
        )

    def state_dict(self) -> dict:
        return {"transitions": self.transitions.state_dict(), "history": self.history.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.transitions.load_state_dict(state["transitions"])
        self.history.load_state_dict(state["history"])


class RecentObs:
    """A policy's own window of each env's last ``context`` observations, for evaluation
    episodes (one per env, from the first call on)."""

    def __init__(self, context: int):
        self.context = context
        self.obs: np.ndarray | None = None
        self.valid: np.ndarray | None = None

    def push(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.obs is None:
            self.obs = np.zeros((len(obs), self.context, *obs.shape[1:]), dtype=obs.dtype)
            self.valid = np.zeros((len(obs), self.context), dtype=bool)
        self.obs = np.concatenate([self.obs[:, 1:], obs[:, None]], axis=1)
        self.valid = np.concatenate([self.valid[:, 1:], np.ones((len(obs), 1), bool)], axis=1)
        return self.obs, self.valid
