"""IMPALA (Espeholt et al. 2018): actors unroll the policy on CPUs, one learner corrects for
their policy lag with V-trace and updates on ``device``.

``actors`` actors (lab/rl/impala_actors.py) each step ``envs_per_actor`` envs for ``unroll``
steps and send the trajectory with the behaviour policy's log-probs; the learner batches
``batch_size`` trajectories, computes V-trace targets (lab/rl/returns.py) and takes one
optimizer step, and every ``broadcast_interval`` updates publishes its weights, which actors
load before their next unroll. The actors are local processes (``backend=processes``) or Ray
actors anywhere in a cluster (``backend=ray``, lab/rl/impala_ray.py): the learner is the same.
Local actors are paced by env-step credits as A3C's workers are; Ray actors keep a few unrolls
queued, across grants too, so they go on while the learner logs or evaluates. Either way the
step counter counts the transitions the learner took, evaluations and checkpoints see the
learner at rest, and a lost actor is replaced.
"""

import copy
import logging
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig

from lab.config import instantiate, require_positive
from lab.errors import ConfigError
from lab.rl.a3c import default_envs_per_worker
from lab.rl.actor_critic import (
    ActorCritic,
    PolicyTerms,
    build_actor_critic,
    check_actor_critic,
    greedy_policy,
    policy_terms,
    policy_value_loss,
)
from lab.rl.actor_spec import ActorSpec
from lab.rl.agent import AgentContext, Policy, episode_lists
from lab.rl.env import make_env
from lab.rl.impala_actors import ActorBackend, ProcessActors, Trajectory
from lab.rl.restarts import restart_limit
from lab.rl.returns import vtrace
from lab.schedules import annealed_lr
from lab.stop import StopCheck, never

log = logging.getLogger("lab")
BACKENDS = ("processes", "ray")


class VtraceSettings(NamedTuple):
    """``vtrace_loss``'s settings, in its argument order."""

    gamma: float
    rho_bar: float  # ρ̄: clips the importance weights of the TD errors and the policy gradient
    c_bar: float  # c̄: clips the trace, how far back a TD error reaches
    value_coef: float
    entropy_coef: float


class Batch(NamedTuple):
    """Trajectories side by side as (T, B·N) tensors on the learner's device."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    cuts: torch.Tensor
    valid: torch.Tensor
    state: tuple[torch.Tensor, ...] | None
    behaviour_log_probs: torch.Tensor


def stack_trajectories(trajectories: list[Trajectory], device: torch.device) -> Batch:
    """One (T, B·N) batch: envs of all trajectories side by side (recurrent states by row)."""

    def cat(arrays: list[np.ndarray], axis: int) -> torch.Tensor:
        return torch.as_tensor(np.concatenate(arrays, axis=axis)).to(device, non_blocking=True)

    columns = {
        key: cat([getattr(t, key) for t in trajectories], axis=1)
        for key in Batch._fields
        if key != "state"
    }
    state = None
    if trajectories[0].state is not None:
        state = tuple(
            cat(list(parts), 0) for parts in zip(*(t.state for t in trajectories), strict=True)
        )
    return Batch(**columns, state=state)


def vtrace_loss(
    model: ActorCritic,
    batch: Batch,
    gamma: float,
    rho_bar: float,
    c_bar: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's loss: ρ-weighted policy gradient on V-trace advantages, V regressed on the
    V-trace targets v_s, an entropy bonus. The learner's net runs once over the T + 1 rows."""
    b = batch
    keep = torch.cat([b.valid, torch.ones_like(b.valid[:1])])
    all_logits, all_values = model.unroll(b.obs, b.state, keep)
    log_probs, entropies = policy_terms(all_logits[:-1].float(), b.actions)
    values_graph = all_values[:-1].float()
    # V after each step as in actor_critic_loss: 0 if terminated, V(final obs) if truncated.
    next_values = all_values[1:].detach().float() * (~b.terminated)
    log_rhos = log_probs.detach() - b.behaviour_log_probs
    with torch.no_grad():
        targets, advantages = vtrace(
            log_rhos,
            b.rewards.float(),
            values_graph.detach(),
            next_values,
            b.cuts,
            gamma,
            rho_bar,
            c_bar,
        )
    terms = PolicyTerms(log_probs, entropies, values_graph, b.valid)
    loss, metrics = policy_value_loss(terms, advantages, targets, value_coef, entropy_coef)
    mask = b.valid.float()
    rhos = log_rhos.exp().clamp(max=rho_bar)
    metrics["train/rho_mean"] = (rhos * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, metrics


class IMPALA:
    def __init__(
        self,
        ctx: AgentContext,
        optimizer: DictConfig,
        ray: DictConfig,
        backend: str = "processes",
        actors: int = 2,
        envs_per_actor: int | None = None,
        unroll: int = 20,
        batch_size: int = 2,
        broadcast_interval: int = 1,
        lr: float = 1e-3,
        lr_anneal: bool = True,
        gamma: float = 0.99,
        rho_bar: float = 1.0,
        c_bar: float = 1.0,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 40.0,
        shared_torso: bool | None = None,
        start_method: str | None = None,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"agent.backend={backend}: use one of {', '.join(BACKENDS)}")
        if actors < 1:
            raise ConfigError(
                f"agent.actors={actors}: must be >= 1 (actor processes or Ray actors)"
            )
        probe = make_env(ctx.env)
        if envs_per_actor is None:
            envs_per_actor = default_envs_per_worker(probe.observation_space)
        check_actor_critic(None, unroll=unroll, envs_per_actor=envs_per_actor)
        require_positive(
            batch_size=batch_size,
            broadcast_interval=broadcast_interval,
            rho_bar=rho_bar,
            c_bar=c_bar,
        )
        self.compute, self.device = ctx.compute, ctx.device
        model = build_actor_critic(
            ctx.net, probe.observation_space, probe.action_space, ctx.name, ctx.env.id, shared_torso
        )
        probe.close()
        self.model = model.to(self.device)
        self.optimizer = instantiate(optimizer)(self.model.parameters())
        self.loss = VtraceSettings(gamma, rho_bar, c_bar, value_coef, entropy_coef)
        self.batch_size, self.broadcast_interval = batch_size, broadcast_interval
        self.max_grad_norm, self.lr, self.lr_anneal = max_grad_norm, lr, lr_anneal
        self.total_steps = ctx.total_steps
        self.step = 0
        self.updates = 0
        self.waiting: list[Trajectory] = []  # arrived, not yet in an update
        spec = ActorSpec(
            env=ctx.env,
            net=ctx.net,
            name=ctx.name,
            seed=ctx.seed,
            envs=envs_per_actor,
            shared_torso=shared_torso,
            unroll=unroll,
        )
        restarts = restart_limit(max_restarts, restart_window_s)
        self.startup_seconds: float | None = None
        self.actors: ActorBackend
        if backend == "ray":
            from lab.rl.impala_ray import RayActors

            self.actors = RayActors(spec, self.model, actors, restarts, ray)
            self.startup_seconds = self.actors.startup_seconds
            how = f"Ray at {self.actors.address}, started in {self.startup_seconds:.1f} s"
        else:
            self.actors = ProcessActors(spec, self.model, actors, start_method, restarts)
            how = f"processes, {self.actors.start_method}"
        log.info("impala: %d actors x %d envs (%s)", actors, envs_per_actor, how)

    def learn(self, budget: int, stop: StopCheck = never) -> dict:
        """Grant ``budget`` env steps of credit; learn from the trajectories as they come.

        An update waits for ``batch_size`` trajectories: the few of a grant that do not fill
        one wait for the next grant's.
        """
        finished = episode_lists()
        sums: dict[str, float] = {}
        n = 0
        for trajectory in self.actors.use(max(budget, 1), stop):
            self.step += trajectory.transitions
            for key, values in trajectory.episodes.items():
                finished[key].extend(values)
            self.waiting.append(trajectory)
            if len(self.waiting) < self.batch_size:
                continue
            for key, value in self.update(self.waiting).items():
                sums[key] = sums.get(key, 0.0) + value
            n += 1
            self.waiting = []
        out: dict = {k: v / n for k, v in sums.items()} | finished
        out["counter/updates"] = self.updates
        out["counter/actors_replaced"] = self.actors.replaced
        if self.startup_seconds is not None:  # once: the backend's start, not in the run's time
            out["perf/backend_startup_s"], self.startup_seconds = self.startup_seconds, None
        return out

    def update(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One optimizer step on a batch of trajectories; publish the weights when due."""
        batch = stack_trajectories(trajectories, self.device)
        with self.compute.autocast():
            loss, metrics = vtrace_loss(self.model, batch, *self.loss)
        lr = annealed_lr(self.lr, self.lr_anneal, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        metrics["train/grad_norm"] = self.compute.backward_step(
            loss, self.optimizer, self.max_grad_norm, clip=self.model.clipped_parameters()
        )
        metrics["train/policy_lag"] = self.updates - np.mean([t.version for t in trajectories])
        self.updates += 1
        if self.updates % self.broadcast_interval == 0:
            self.actors.publish(self.model, self.updates)
        out = {key: float(value) for key, value in metrics.items()}
        out["train/lr"] = lr
        return out

    def policy(self) -> Policy:
        """Greedy, on a snapshot of the learner's weights."""
        return greedy_policy(copy.deepcopy(self.model), self.device)

    def state_dict(self, resumable: bool) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {
                "step": self.step,
                "updates": self.updates,
                "actors_replaced": self.actors.replaced,
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Weights, optimizer and counters; actors load the weights before their next unroll
        and start their episodes afresh."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        counters = state["counters"]
        self.step, self.updates = counters["step"], counters["updates"]
        self.actors.replaced = counters.get("actors_replaced", 0)
        self.actors.publish(self.model, self.updates)

    def nets(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def close(self) -> None:
        self.actors.close()
