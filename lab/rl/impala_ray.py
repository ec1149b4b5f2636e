"""IMPALA's actors as Ray actors (``agent.backend=ray``): anywhere in a cluster, or on a local
Ray started for the run and stopped after it.

Trajectories come back as the results of ``unroll`` calls and weights go out with the calls
(through Ray's object store when they are large). Each actor keeps ``unrolls_in_flight`` queued;
the learner queues the next, with the latest weights when they are newer than the actor's, as
soon as one arrives. The death count is the processes backend's (lab/rl/restarts.py).
"""

import logging
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lab.compute import available_cores
from lab.config import require_positive
from lab.errors import ConfigError
from lab.rl.actor_critic import ActorCritic
from lab.rl.actor_spec import ActorSpec
from lab.rl.impala_actors import Actor, Trajectory
from lab.rl.restarts import Deaths, RestartLimit, WorkerFailed
from lab.rl.workers import POLL_SECONDS
from lab.stop import StopCheck, never

log = logging.getLogger("lab")
INLINE_BYTES = 100 * 1024  # Ray's max_direct_call_object_size: it inlines arguments this small
CONNECT_SECONDS = 5.0  # how long an address may take to answer before it counts as unreachable


class RemoteActor:
    """The Ray actor: an ``Actor`` that loads the weights it is sent before it unrolls."""

    def __init__(self, spec: ActorSpec, seed: int):
        torch.set_num_threads(1)  # one CPU per actor, as Ray accounts for it
        self.actor = Actor(spec, seed)

    def unroll(self, weights: dict[str, np.ndarray] | None, version: int) -> Trajectory:
        if weights is not None:  # may be read-only views of the object store: copied
            self.actor.load({k: torch.tensor(v) for k, v in weights.items()}, version)
        return self.actor.unroll()

    def pid(self) -> int:
        return os.getpid()


def describe(error: Exception) -> str:
    """What became of an actor, from the error its call raised: its own exception if it raised
    one (Ray wraps it), else that its process or node was lost."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception) and "ray.exceptions" not in type(cause).__module__:
        return f"raised {type(cause).__name__}: {cause}"
    return f"was lost ({type(error).__name__})"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "agent.backend=ray: Ray is not installed; pip install 'lab[ray]', "
            "or use agent.backend=processes"
        ) from None
    return ray


def check_reachable(address: str) -> None:
    """A one-line error for an address nothing answers at, where Ray itself would retry for
    minutes and print a screenful (``auto`` is Ray's to find: it fails at once)."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname is None or port is None:
        raise ConfigError(
            f"agent.ray.address={address}: give host:port (the head's GCS, e.g. 10.0.0.1:6379), "
            "ray://host:10001, auto, or null for a local Ray"
        )
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise ConfigError(
            f"agent.ray.address={address}: nothing answers there ({e.strerror or e}); start the "
            "cluster (ray start --head) or use agent.ray.address=null for a local Ray"
        ) from None


class RayActors:
    """``actors`` Ray actors with ``cfg``'s resources each; see the module docstring."""

    def __init__(
        self,
        spec: ActorSpec,
        model: ActorCritic,
        actors: int,
        restarts: RestartLimit,
        cfg: DictConfig,
    ):
        self.ray = ray = import_ray()
        require_positive("agent.ray", unrolls_in_flight=cfg.unrolls_in_flight)
        self.spec, self.deaths = spec, Deaths("impala", restarts)
        self.address = cfg.address or "a local Ray"
        started = time.perf_counter()
        init = {"include_dashboard": False, "logging_level": logging.WARNING}
        if cfg.address is None:  # enough logical CPUs that every actor starts, even on 2 cores
            init["num_cpus"] = max(available_cores(), actors * cfg.num_cpus_per_actor)
            # Ray starts its workers at nice 15, below the driver: here the actors are the
            # work, and on cores they share with the learner they would wait behind it.
            init["_system_config"] = {"worker_niceness": 0}
        else:
            check_reachable(cfg.address)
        try:
            ray.init(address=cfg.address, **init)
        except ConnectionError as e:
            raise ConfigError(f"agent.ray.address={cfg.address}: {e}") from None
        try:
            self._start_actors(model, actors, cfg)
        except BaseException:
            self.close()  # the runner closes only a task it has: leave no Ray behind
            raise
        self.startup_seconds = time.perf_counter() - started

    def _start_actors(self, model: ActorCritic, actors: int, cfg: DictConfig) -> None:
        ray = self.ray
        self.remote = ray.remote(
            num_cpus=cfg.num_cpus_per_actor,
            num_gpus=cfg.num_gpus_per_actor,
            resources=OmegaConf.to_container(cfg.resources_per_actor) or None,
            max_restarts=0,  # a lost actor is replaced here, where the loss is counted
        )(RemoteActor)
        self.incarnations = [0] * actors
        self.handles = [self._start(slot) for slot in range(actors)]
        # Unrolls queued on each actor: with two, the next starts as the last ends, not a round
        # trip through the learner later (Ray runs an actor's calls one at a time, in order).
        self.in_flight = cfg.unrolls_in_flight
        self.pending: dict = {}  # object ref of an unroll in flight -> (slot, incarnation)
        self.sent = [-1] * actors  # the weights' version each actor has
        self.publish(model, 0)
        try:
            ray.get([handle.pid.remote() for handle in self.handles])  # every actor is up
        except ray.exceptions.RayError as error:
            raise WorkerFailed(f"impala: an actor failed to start: {describe(error)}") from None

    @property
    def replaced(self) -> int:
        return self.deaths.replaced

    @replaced.setter
    def replaced(self, count: int) -> None:
        self.deaths.replaced = count

    def _start(self, slot: int):
        seed = self.spec.seed + 1000 * (slot + 1) + self.incarnations[slot]
        return self.remote.options(name=None).remote(self.spec, seed)

    def publish(self, model: ActorCritic, version: int) -> None:
        """Weights as numpy arrays: Ray pickles those out of band, where torch tensors go
        through torch.save (a quarter of the learner's time on CartPole). Small ones travel
        inside each call, as Ray inlines small arguments; a large net goes to the object store
        once. On CartPole, inlining took env-steps/s from ~22.7k to ~26k (README)."""
        weights = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        if sum(w.nbytes for w in weights.values()) > INLINE_BYTES:
            weights = self.ray.put(weights)
        self.weights, self.version = weights, version

    def _launch(self, slot: int) -> None:
        """The actor's next unroll, with the latest weights if it has older ones."""
        weights = self.weights if self.sent[slot] != self.version else None
        self.sent[slot] = self.version
        ref = self.handles[slot].unroll.remote(weights, self.version)
        self.pending[ref] = (slot, self.incarnations[slot])

    def use(self, budget: int, stop: StopCheck = never) -> Iterator[Trajectory]:
        """Trajectories worth ``budget`` env steps (the last may overshoot); a lost actor's
        unroll is started again on its replacement. After ``stop()`` none is taken.

        Each actor keeps ``unrolls_in_flight`` unrolls queued across calls, so the actors go on
        while the learner logs, evaluates or checkpoints rather than wait for the next grant
        (IMPALA's actors never wait for the learner). The step counter counts the trajectories
        taken; the few still queued when the run ends are dropped with the actors.
        """
        for slot in range(len(self.handles)):
            queued = sum(s == slot for s, _ in self.pending.values())
            for _ in range(self.in_flight - queued):
                self._launch(slot)
        while budget > 0 and not stop():
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=POLL_SECONDS)
            if not ready:
                continue
            slot, incarnation = self.pending.pop(ready[0])
            try:
                trajectory = self.ray.get(ready[0])
            except self.ray.exceptions.RayError as error:
                if incarnation == self.incarnations[slot]:  # not an unroll of one replaced
                    self._replace(slot, error)
                self._launch(slot)
                continue
            budget -= self.spec.credits
            self._launch(slot)
            yield trajectory

    def _replace(self, slot: int, error: Exception) -> None:
        """A new actor in the place of one whose unroll failed (it raised, or its process or
        node is gone); raises ``WorkerFailed`` when actors keep dying."""
        self.deaths.record(f"actor {slot}", describe(error))
        self.ray.kill(self.handles[slot], no_restart=True)
        self.incarnations[slot] += 1
        self.handles[slot] = self._start(slot)
        self.sent[slot] = -1

    def close(self) -> None:
        """Stop the actors; stop the local Ray this run started (or leave the cluster)."""
        if not self.ray.is_initialized():
            return
        for handle in getattr(self, "handles", []):
            self.ray.kill(handle, no_restart=True)
        self.ray.shutdown()
