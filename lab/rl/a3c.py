"""Asynchronous advantage actor-critic (Mnih et al. 2016): Hogwild actor-learners on CPU cores.

``workers`` processes each own an environment copy and a local model. A worker pulls the
shared weights, collects a ``t_max``-step rollout, computes the loss (actor_critic.py, the same
code as A2C), clips its gradients and applies them lock-free through a shared optimizer whose
statistics live in shared memory. The main process stays in charge: it hands out env-step
credits (so the global step counter is exact and evaluations see weights at rest), pools the
workers' reports, evaluates a snapshot and checkpoints. The processes themselves (starting,
pacing, failures, shutdown) are lab/rl/workers.py's.
"""

import copy
import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch
from omegaconf import DictConfig

from lab.compute import available_cores
from lab.config import instantiate
from lab.errors import ConfigError
from lab.rl.actor_critic import (
    ActorCritic,
    LossSettings,
    actor_critic_loss,
    build_actor_critic,
    check_actor_critic,
    greedy_policy,
)
from lab.rl.actor_spec import ActorSpec, build_actor
from lab.rl.agent import AgentContext, EpisodeLists, Policy, episode_lists
from lab.rl.env import make_env
from lab.rl.restarts import restart_limit
from lab.rl.workers import WorkerLink, WorkerPool
from lab.schedules import annealed_lr
from lab.stop import StopCheck, never

log = logging.getLogger("lab")


@dataclass(frozen=True, kw_only=True)
class ActorLearnerSpec(ActorSpec):
    """An actor's spec, and what its process needs to learn too (``unroll`` is ``t_max``)."""

    loss: LossSettings
    max_grad_norm: float
    lr: float
    lr_anneal: bool  # linearly to 0 over total_steps, on the global step counter
    total_steps: int


class Report(NamedTuple):
    """What an actor-learner sends the main process after each update."""

    transitions: int  # real transitions among them (an autoreset step is none)
    episodes: EpisodeLists
    metrics: dict[str, float]


def default_envs_per_worker(obs_space) -> int:
    """16 for vector observations, 1 (the paper) for images.

    On a cheap env such as CartPole a worker's time goes to the forward and backward passes,
    which cost about the same for 16 observations as for one: 16 envs per worker give 2
    workers on 2 cores 13x the env steps/s of one env each (README, Benchmarks). An image net's
    cost grows with the batch, and 16 workers x 16 Atari envs would hold 256 emulators.
    """
    return 1 if len(obs_space.shape) == 3 else 16


class A3C:
    def __init__(
        self,
        ctx: AgentContext,
        optimizer: DictConfig,
        workers: int | None = None,
        envs_per_worker: int | None = None,
        start_method: str | None = None,
        t_max: int = 5,
        lr: float = 1e-3,
        gamma: float = 0.99,
        gae_lambda: float | None = None,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 40.0,
        lr_anneal: bool = True,
        shared_torso: bool | None = None,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ):
        workers = available_cores() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"agent.workers={workers}: must be >= 1 (null = all cores)")
        probe = make_env(ctx.env)
        if envs_per_worker is None:
            envs_per_worker = default_envs_per_worker(probe.observation_space)
        check_actor_critic(t_max=t_max, envs_per_worker=envs_per_worker, gae_lambda=gae_lambda)
        self.model = build_actor_critic(
            ctx.net, probe.observation_space, probe.action_space, ctx.name, ctx.env.id, shared_torso
        )
        probe.close()
        self.model.share_memory()
        self.optimizer = instantiate(optimizer)(self.model.parameters())
        share_optimizer_state(self.optimizer)  # once: before the workers, and before a resume
        spec = ActorLearnerSpec(
            env=ctx.env,
            net=ctx.net,
            name=ctx.name,
            seed=ctx.seed,
            envs=envs_per_worker,
            shared_torso=shared_torso,
            unroll=t_max,
            loss=LossSettings(gamma, gae_lambda, value_coef, entropy_coef),
            max_grad_norm=max_grad_norm,
            lr=lr,
            lr_anneal=lr_anneal,
            total_steps=ctx.total_steps,
        )
        self.device = torch.device("cpu")  # Hogwild shares CPU memory; compute.device is unused
        self.step = 0
        self.updates = 0
        # Which parameters init_from.freeze fixed, in shared memory: the workers started before
        # the freeze, and requires_grad does not cross processes. Set at each learn().
        self.frozen = torch.zeros(len(list(self.model.parameters())), dtype=torch.bool)
        self.frozen.share_memory_()
        self.pool = WorkerPool(  # now, while the process has one thread (choose_start_method)
            target=actor_learner,
            args=(spec, self.model, self.optimizer, self.frozen),
            workers=workers,
            start_method=start_method,
            name="a3c",
            restarts=restart_limit(max_restarts, restart_window_s),
        )
        log.info("a3c: %d workers x %d envs (%s)", workers, spec.envs, self.pool.start_method)

    def learn(self, budget: int, stop: StopCheck = never) -> dict:
        """Grant ``budget`` env steps of credit and pool the reports until they are used.

        A worker takes whole vector steps (``envs_per_worker`` env steps each), so the last
        grant may overshoot by less than that; the overshoot is not carried over. The loop ends
        once the reported steps cover the budget, which is when every grant has been reported.
        """
        # The workers are idle between grants, so they see the new mask from their next update.
        self.frozen.copy_(torch.tensor([not p.requires_grad for p in self.model.parameters()]))
        finished = episode_lists()
        sums: dict[str, float] = {}
        n = 0
        for report in self.pool.use(max(budget, 1), stop):
            self.step += report.transitions
            self.updates += 1
            for key, values in report.episodes.items():
                finished[key].extend(values)
            for key, value in report.metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            n += 1
        out: dict = {k: v / max(n, 1) for k, v in sums.items()} | finished
        out["counter/updates"] = self.updates
        out["counter/actors_replaced"] = self.pool.deaths.replaced
        return out

    def policy(self) -> Policy:
        """Greedy, on a snapshot of the shared weights."""
        return greedy_policy(copy.deepcopy(self.model), self.device)

    def state_dict(self, resumable: bool) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {
                "step": self.step,
                "updates": self.updates,
                "actors_replaced": self.pool.deaths.replaced,
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Weights, shared optimizer statistics and counters; worker episodes start afresh.

        Everything is copied into the shared tensors, so idle workers see it too.
        """
        self.model.load_state_dict(state["model"])  # copies into the shared tensors
        saved = state["optimizer"]["state"]
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for index, p in enumerate(params):
            for key, value in saved.get(index, {}).items():
                self.optimizer.state[p][key].copy_(value)
        self.step, self.updates = state["counters"]["step"], state["counters"]["updates"]
        self.pool.deaths.replaced = state["counters"].get("actors_replaced", 0)
        self.pool.set_taken(self.step)

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def close(self) -> None:
        self.pool.close()


def share_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state now, in shared memory, so Hogwild workers update one copy.

    One step on zero gradients makes torch create exactly the state it expects (it leaves
    the parameters unchanged without weight decay), then the step counters go back to 0.
    """
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0) or group.get("momentum", 0):
            raise ConfigError(
                "agent.optimizer: shared optimizers here take no weight_decay or momentum"
            )
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for state in optimizer.state.values():
        for key, value in state.items():
            if key == "step":
                value.zero_()
            value.share_memory_()
    optimizer.zero_grad(set_to_none=True)


def actor_learner(
    link: WorkerLink,
    spec: ActorLearnerSpec,
    shared: ActorCritic,
    optimizer: torch.optim.Optimizer,
    frozen: torch.Tensor,
) -> None:
    """One actor-learner of the paper's Algorithm S3, as a process: until the pool closes,
    sync θ' ← θ, act for up to ``t_max`` steps, and apply dθ to θ through the shared optimizer.
    Parameters that ``frozen`` marks get no gradient: neither clipped with the rest nor applied.
    """
    envs, local, collector = build_actor(spec, link.seed(spec.seed))
    shared_params, local_params = list(shared.parameters()), list(local.parameters())
    clipped = local.clipped_parameters()
    while link.running():
        steps, global_step = link.take(spec.unroll, spec.envs)  # vector steps of credit
        if steps == 0:  # idle: the main process evaluates, checkpoints, or the run is over
            link.sleep()
            continue
        with torch.no_grad():  # θ' ← θ (our nets have parameters, no buffers)
            torch._foreach_copy_(local_params, shared_params)
        episodes = episode_lists()
        rollout, transitions = collector.collect(local, steps, episodes)
        loss, metrics = actor_critic_loss(local, rollout, *spec.loss)
        for local_p in local_params:
            local_p.grad = None
        loss.backward()
        for local_p, fixed in zip(local_params, frozen.tolist(), strict=True):
            if fixed:
                local_p.grad = None  # the optimizer skips a parameter with no gradient
        metrics["train/grad_norm"] = torch.nn.utils.clip_grad_norm_(clipped, spec.max_grad_norm)
        for local_p, shared_p in zip(local_params, shared_params, strict=True):
            shared_p.grad = local_p.grad  # Hogwild: no lock around the shared update
        for group in optimizer.param_groups:
            group["lr"] = annealed_lr(spec.lr, spec.lr_anneal, global_step, spec.total_steps)
        optimizer.step()
        metrics = {key: float(value) for key, value in metrics.items()}
        link.report(Report(transitions, episodes, metrics), credits=steps * spec.envs)
    envs.close()
