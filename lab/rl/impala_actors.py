"""IMPALA's actors and how trajectories reach the learner: local processes or Ray actors.

An ``Actor`` is the same object on either backend: it owns its vector envs and a CPU copy of
the net, loads the weights the learner last published, and unrolls the policy for ``unroll``
steps into a ``Trajectory``. A backend (``ProcessActors`` here, ``RayActors`` in
lab/rl/impala_ray.py) runs ``actors`` of them, paces them with env-step credits as A3C's
workers are paced (lab/rl/workers.py), replaces the ones that die and stops them all.
"""

import copy
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.multiprocessing as mp

from lab.rl.actor_critic import ActorCritic, policy_terms
from lab.rl.actor_spec import ActorSpec, build_actor
from lab.rl.agent import EpisodeLists, episode_lists
from lab.rl.restarts import RestartLimit
from lab.rl.workers import WorkerLink, WorkerPool, choose_start_method
from lab.stop import StopCheck, never


class Trajectory(NamedTuple):
    """``unroll`` steps of ``envs`` envs as numpy arrays (pickled cheaply, zero-copy in Ray's
    object store): ``obs`` has one more row, the bootstrap observation. ``valid`` is False on
    autoreset steps, ``cuts`` marks episode ends, ``terminated`` those that were not
    truncations (lab/rl/returns.py). ``state`` is the recurrent state the unroll started from,
    ``behaviour_log_probs`` log μ(a|x) of the actions taken, ``version`` the weights' number."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    cuts: np.ndarray
    valid: np.ndarray
    state: tuple[np.ndarray, ...] | None
    behaviour_log_probs: np.ndarray
    transitions: int  # real transitions (an autoreset step is none)
    episodes: EpisodeLists
    version: int


class Actor:
    """Vector envs, a CPU copy of the net, and the weights' version it holds."""

    def __init__(self, spec: ActorSpec, seed: int):
        self.unroll_steps = spec.unroll
        self.envs, self.model, self.collector = build_actor(spec, seed)
        self.version = -1  # no weights yet

    def load(self, weights: dict[str, torch.Tensor], version: int) -> None:
        self.model.load_state_dict(weights)
        self.version = version

    @torch.no_grad()
    def unroll(self) -> Trajectory:
        """The current policy for ``unroll`` steps. The behaviour log-probs come from one
        batched pass over the unroll, which gives what acting computed step by step."""
        episodes = episode_lists()
        r, transitions = self.collector.collect(self.model, self.unroll_steps, episodes)
        keep = torch.cat([r.valid, torch.ones_like(r.valid[:1])])
        logits, _ = self.model.unroll(r.obs, r.state, keep)
        log_probs, _ = policy_terms(logits[:-1], r.actions)
        return Trajectory(
            obs=r.obs.numpy(),
            actions=r.actions.numpy(),
            rewards=r.rewards.numpy(),
            terminated=r.terminated.numpy(),
            cuts=r.cuts.numpy(),
            valid=r.valid.numpy(),
            state=None if r.state is None else tuple(s.numpy() for s in r.state),
            behaviour_log_probs=log_probs.numpy(),
            transitions=transitions,
            episodes=episodes,
            version=self.version,
        )

    def close(self) -> None:
        self.envs.close()


class ActorBackend(Protocol):
    """What the learner (lab/rl/impala.py) asks of its actors, whichever backend runs them."""

    replaced: int  # actors lost and replaced over the run

    def use(self, budget: int, stop: StopCheck = never) -> Iterator[Trajectory]:
        """Trajectories worth ``budget`` env steps of credit (the last may overshoot)."""
        ...

    def publish(self, model: ActorCritic, version: int) -> None:
        """Make ``model``'s weights the ones actors load before their next unroll."""
        ...

    def close(self) -> None: ...


class SharedWeights:
    """The published weights in shared memory, behind a sequence lock.

    The learner sets ``sequence`` to an odd number, copies, and sets it to the next even one;
    an actor copies and keeps the copy only if ``sequence`` was even and unchanged throughout.
    No lock that an actor killed mid-copy could leave held.
    """

    def __init__(self, model: ActorCritic, ctx):
        self.model = model  # a CPU copy, share_memory()'d by the caller
        self.sequence = ctx.Value("q", 0, lock=False)  # 2 · version + 2 once published

    def write(self, source: ActorCritic, version: int) -> None:
        self.sequence.value = 2 * version + 1
        with torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), source.parameters(), strict=True):
                mine.copy_(theirs)
        self.sequence.value = 2 * version + 2

    def read_into(self, actor: Actor) -> None:
        """Load the published weights into ``actor`` if they are newer than its own."""
        while True:
            before = self.sequence.value
            version = before // 2 - 1
            if version == actor.version:
                return
            if before % 2 == 0:
                weights = {k: v.clone() for k, v in self.model.state_dict().items()}
                if self.sequence.value == before:
                    actor.load(weights, version)
                    return


def actor_process(link: WorkerLink, spec: ActorSpec, weights: SharedWeights) -> None:
    """One actor as a process: until the pool closes, take a trajectory's worth of credit,
    load fresh weights if there are any, unroll, and send the trajectory."""
    actor = Actor(spec, link.seed(spec.seed))
    while link.running():
        chunks, _ = link.take(1, spec.credits)
        if chunks == 0:  # idle: the learner evaluates, checkpoints, or the run is over
            link.sleep()
            continue
        weights.read_into(actor)
        link.report(actor.unroll(), credits=spec.credits)
    actor.close()


class ProcessActors:
    """Actors as local processes on ``lab.rl.workers.WorkerPool``; weights in shared memory."""

    def __init__(
        self,
        spec: ActorSpec,
        model: ActorCritic,
        actors: int,
        start_method: str | None,
        restarts: RestartLimit,
    ):
        method = choose_start_method(start_method)
        shared = copy.deepcopy(model).cpu()
        shared.share_memory()
        self.weights = SharedWeights(shared, mp.get_context(method))
        self.weights.write(model, 0)
        self.pool = WorkerPool(  # now, while the process has one thread (choose_start_method)
            target=actor_process,
            args=(spec, self.weights),
            workers=actors,
            start_method=method,
            name="impala",
            restarts=restarts,
        )
        self.start_method = method

    @property
    def replaced(self) -> int:
        return self.pool.deaths.replaced

    @replaced.setter
    def replaced(self, count: int) -> None:
        self.pool.deaths.replaced = count

    def use(self, budget: int, stop: StopCheck = never) -> Iterator[Trajectory]:
        return self.pool.use(budget, stop)

    def publish(self, model: ActorCritic, version: int) -> None:
        self.weights.write(model, version)

    def close(self) -> None:
        self.pool.close()
