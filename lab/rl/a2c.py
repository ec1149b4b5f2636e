"""Advantage actor-critic, synchronous (the A2C of Wu et al. 2017 / SB3): A3C's losses and
returns on one learner stepping a Gymnasium vector env. Hyperparameters: conf/agent/a2c.yaml.
"""

from omegaconf import DictConfig

from lab.compute import Compute
from lab.config import instantiate, require_positive
from lab.errors import ConfigError
from lab.rl.actor_critic import (
    RolloutCollector,
    actor_critic_loss,
    build_actor_critic,
    greedy_policy,
)
from lab.rl.env import make_vec_env


def check_actor_critic(gae_lambda: float | None, **positive: float) -> None:
    """Checks A2C and A3C share: positive sizes and rates, λ in [0, 1] or null."""
    require_positive(**positive)
    lam = gae_lambda
    if lam is not None and not 0 <= lam <= 1:
        raise ConfigError(f"agent.gae_lambda={lam}: must be in [0, 1], or null for n-step returns")


class A2C:
    def __init__(
        self,
        env_cfg: DictConfig,
        net_cfg: DictConfig,
        compute: Compute,
        seed: int,
        optimizer: DictConfig,
        name: str = "a2c",
        total_steps: int = 200_000,
        num_envs: int = 8,
        t_max: int = 5,
        lr: float = 7e-4,
        gamma: float = 0.99,
        gae_lambda: float | None = None,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        lr_anneal: bool = False,
        shared_torso: bool | None = None,
    ):
        check_actor_critic(lr=lr, t_max=t_max, num_envs=num_envs, gae_lambda=gae_lambda)
        self.compute, self.device = compute, compute.device
        self.envs = make_vec_env(env_cfg, num_envs)
        self.model = build_actor_critic(
            net_cfg,
            self.envs.single_observation_space,
            self.envs.single_action_space,
            name,
            env_cfg.id,
            shared_torso,
        )
        self.model.to(self.device)
        self.optimizer = instantiate(optimizer)(self.model.parameters())
        self.collector = RolloutCollector(self.envs, seed, self.device)
        self.t_max, self.gamma, self.gae_lambda = t_max, gamma, gae_lambda
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        self.max_grad_norm, self.lr, self.lr_anneal = max_grad_norm, lr, lr_anneal
        self.total_steps = total_steps
        self.step = 0
        self.updates = 0

    def learn(self, budget: int) -> dict:
        finished: dict[str, list[float]] = {
            "rollout/episode_return": [],
            "rollout/episode_length": [],
        }
        sums: dict[str, float] = {}
        n = 0
        end = self.step + max(budget, 1)
        while self.step < end:
            rollout, transitions = self.collector.collect(self.model, self.t_max, finished)
            with self.compute.autocast():
                loss, metrics = actor_critic_loss(
                    self.model,
                    rollout,
                    self.gamma,
                    self.gae_lambda,
                    self.value_coef,
                    self.entropy_coef,
                )
            if self.lr_anneal:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr * max(1.0 - self.step / self.total_steps, 0.0)
            metrics["train/grad_norm"] = self.compute.backward_step(
                loss, self.optimizer, self.max_grad_norm, clip=self.model.clipped_parameters()
            )
            self.step += transitions
            self.updates += 1
            n += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        out: dict = {k: v / n for k, v in sums.items()} | finished
        out["counter/updates"] = self.updates
        out["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def act(self, obs):
        return greedy_policy(self.model, self.device)(obs)

    def eval_policy(self):
        return greedy_policy(self.model, self.device)

    def state_dict(self, include_buffer: bool = True) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"step": self.step, "updates": self.updates},
        }

    def load_state_dict(self, state: dict) -> None:
        """Weights, optimizer and counters; episodes in flight start afresh."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.updates = state["counters"]["step"], state["counters"]["updates"]

    def close(self) -> None:
        self.envs.close()
