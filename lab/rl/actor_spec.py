"""What an actor process builds its side from: A3C's actor-learners and IMPALA's actors."""

from dataclasses import dataclass

import torch
from gymnasium.vector import VectorEnv
from omegaconf import DictConfig

from lab.compute import seed_everything
from lab.rl.actor_critic import ActorCritic, RolloutCollector, build_actor_critic
from lab.rl.env import make_vec_env


@dataclass(frozen=True, kw_only=True)
class ActorSpec:
    """Picklable: it travels to worker processes (fork, forkserver, spawn) and to Ray."""

    env: DictConfig
    net: DictConfig
    name: str  # the agent's config name, for error messages
    seed: int
    envs: int  # envs stepped together: one forward pass serves them all
    shared_torso: bool | None
    unroll: int  # vector steps per rollout (A3C's t_max)

    @property
    def credits(self) -> int:
        """Env steps of credit one whole rollout uses."""
        return self.unroll * self.envs


def build_actor(spec: ActorSpec, seed: int) -> tuple[VectorEnv, ActorCritic, RolloutCollector]:
    """An actor's own envs, CPU copy of the net and rollout collector, seeded with ``seed``
    (its own: see ``WorkerLink.seed``)."""
    seed_everything(seed)
    envs = make_vec_env(spec.env, spec.envs, train=True)
    model = build_actor_critic(
        spec.net,
        envs.single_observation_space,
        envs.single_action_space,
        spec.name,
        spec.env.id,
        spec.shared_torso,
    )
    return envs, model, RolloutCollector(envs, seed, torch.device("cpu"))
