"""Advantage actor-critic, synchronous (the A2C of Wu et al. 2017 / SB3): A3C's losses and
returns on one learner stepping a Gymnasium vector env. Hyperparameters: conf/agent/a2c.yaml.
"""

from torch import nn

from lab.config import instantiate
from lab.rl.actor_critic import (
    LossSettings,
    RolloutCollector,
    actor_critic_loss,
    build_actor_critic,
    check_actor_critic,
    greedy_policy,
)
from lab.rl.agent import AgentContext, Policy, episode_lists
from lab.rl.env import make_vec_env
from lab.schedules import annealed_lr
from lab.stop import StopCheck, never


class A2C:
    def __init__(
        self,
        ctx: AgentContext,
        optimizer,
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
        check_actor_critic(t_max=t_max, num_envs=num_envs, gae_lambda=gae_lambda)
        self.compute, self.device = ctx.compute, ctx.device
        self.envs = make_vec_env(ctx.env, num_envs, train=True)
        self.model = build_actor_critic(
            ctx.net,
            self.envs.single_observation_space,
            self.envs.single_action_space,
            ctx.name,
            ctx.env.id,
            shared_torso,
        )
        self.model.to(self.device)
        self.optimizer = instantiate(optimizer)(self.model.parameters())
        self.collector = RolloutCollector(self.envs, ctx.seed, self.device)
        self.t_max = t_max
        self.loss = LossSettings(gamma, gae_lambda, value_coef, entropy_coef)
        self.max_grad_norm, self.lr, self.lr_anneal = max_grad_norm, lr, lr_anneal
        self.total_steps = ctx.total_steps
        self.step = 0
        self.updates = 0

    def learn(self, budget: int, stop: StopCheck = never) -> dict:
        finished = episode_lists()
        sums: dict[str, float] = {}
        n = 0
        end = self.step + max(budget, 1)
        while self.step < end:
            rollout, transitions = self.collector.collect(self.model, self.t_max, finished)
            with self.compute.autocast():
                loss, metrics = actor_critic_loss(self.model, rollout, *self.loss)
            lr = annealed_lr(self.lr, self.lr_anneal, self.step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            metrics["train/grad_norm"] = self.compute.backward_step(
                loss, self.optimizer, self.max_grad_norm, clip=self.model.clipped_parameters()
            )
            self.step += transitions
            self.updates += 1
            n += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            if stop():
                break
        out: dict = {k: v / n for k, v in sums.items()} | finished
        out["counter/updates"] = self.updates
        out["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def policy(self) -> Policy:
        return greedy_policy(self.model, self.device)

    def state_dict(self, resumable: bool) -> dict:
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

    def nets(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def close(self) -> None:
        self.envs.close()
