"""What an RL agent is to the lab: the ``Agent`` protocol, and what every agent is built with.

``RLTask`` (lab/rl/task.py) builds an agent as ``cls(AgentContext(...), **hyperparameters)``,
where the hyperparameters are the keys of its ``conf/agent/<name>.yaml``, and then calls only
the members below. ``tests/test_contracts.py`` checks every shipped agent against them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from lab.compute import Compute
from lab.stop import StopCheck, never

Policy = Callable[[np.ndarray], np.ndarray]  # a batch of observations -> a batch of actions
EpisodeLists = dict[str, list[float]]  # rollout/episode_return and rollout/episode_length


@dataclass(frozen=True)
class AgentContext:
    """The constructor arguments every agent shares; its own hyperparameters come as keywords."""

    env: DictConfig  # the ``env`` group: id, kwargs, Atari wrappers, train_reward_clip
    net: DictConfig  # the ``net`` group: a torso config for ``lab.config.instantiate``
    compute: Compute  # device and precision
    seed: int
    name: str  # the agent's config name (agent.name), for error messages
    total_steps: int  # the run's budget in env steps: schedules anneal over it

    @property
    def device(self) -> torch.device:
        return self.compute.device


class Agent(Protocol):
    """Learns from its own training envs; evaluation envs belong to the task."""

    @property
    def step(self) -> int:
        """Env steps taken, summed over every training env (and worker)."""
        ...

    @property
    def updates(self) -> int:
        """Optimizer updates made so far."""
        ...

    def learn(self, budget: int, stop: StopCheck = never) -> dict:
        """Take about ``budget`` env steps (at least one), learning as it goes; return early
        after the update or vector step in progress once ``stop()`` is true.

        Returns the metrics since the last call: scalars (``train/...``), the returns and
        lengths of the episodes that finished (lists) and ``counter/updates``.
        """
        ...

    def policy(self) -> Policy:
        """A fresh deterministic policy for evaluation (its own recurrent state, if any)."""
        ...

    def state_dict(self, resumable: bool) -> dict:
        """Weights, optimizer, counters; with ``resumable``, also what only an exact resume
        needs (a replay buffer)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def nets(self) -> dict[str, torch.nn.Module]:
        """Its networks by name, as ``state_dict`` names them (``lab.task.Task.nets``)."""
        ...

    def close(self) -> None: ...


def episode_lists() -> EpisodeLists:
    """Empty lists for the episodes finished during one ``learn`` call."""
    return {"rollout/episode_return": [], "rollout/episode_length": []}


def book_episodes(infos: dict, finished: EpisodeLists) -> None:
    """Append the episodes that ended in this vector step to ``finished``.

    ``infos`` is what a vector env wrapped in Gymnasium's ``RecordEpisodeStatistics`` (see
    ``lab.rl.env.make_vec_env``) returned: undiscounted, unclipped returns and lengths.
    """
    done = infos.get("_episode")
    if done is None or not done.any():
        return
    stats = infos["episode"]
    finished["rollout/episode_return"].extend(stats["r"][done].tolist())
    finished["rollout/episode_length"].extend(stats["l"][done].astype(float).tolist())
