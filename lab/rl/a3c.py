"""Asynchronous advantage actor-critic (Mnih et al. 2016): Hogwild actor-learners on CPU cores.

``workers`` processes each own an environment copy and a local model. A worker pulls the
shared weights, collects a ``t_max``-step rollout, computes the loss (actor_critic.py, the same
code as A2C), clips its gradients and applies them lock-free through a shared optimizer whose
statistics live in shared memory. The main process stays in charge: it hands out env-step
credits (so the global step counter is exact and evaluations see weights at rest), drains the
workers' reports, evaluates a snapshot, checkpoints, and stops the workers on a signal or fault.
"""

import copy
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp
from omegaconf import DictConfig

from lab.compute import seed_everything
from lab.config import instantiate
from lab.errors import ConfigError
from lab.rl.actor_critic import (
    RolloutCollector,
    actor_critic_loss,
    annealed_lr,
    build_actor_critic,
    check_actor_critic,
    greedy_policy,
    share_optimizer_state,
)
from lab.rl.agent import AgentContext, Policy, episode_lists
from lab.rl.env import make_env, make_vec_env

log = logging.getLogger("lab")
POLL_SECONDS = 0.2  # how often the main process looks at its workers while it waits
IDLE_SECONDS = 0.1  # how long an idle worker sleeps before it looks at `stop` and the main process


class WorkerFailed(RuntimeError):
    """A worker raised, or died (killed, out of memory)."""


@dataclass
class WorkerSpec:
    """What a worker process needs to rebuild its side (picklable for spawn)."""

    env_cfg: DictConfig
    net_cfg: DictConfig
    name: str
    seed: int
    t_max: int
    gamma: float
    gae_lambda: float | None
    value_coef: float
    entropy_coef: float
    max_grad_norm: float
    lr: float
    lr_anneal: bool
    total_steps: int
    shared_torso: bool | None
    envs_per_worker: int


def choose_start_method(requested: str | None) -> str:
    """How worker processes start. ``None``: fork where that is safe, else forkserver or spawn.

    Fork starts a worker in milliseconds where spawn re-imports torch in each (about 1 s per
    worker, all of it inside the run's time). It is safe when the process has no other thread
    whose locks a child could inherit held: the workers start while the agent is built, before
    the logger and the progress bar start theirs. Under a launcher that runs jobs in threaded
    processes (joblib's loky, Ray) the workers fork from a fresh forkserver instead.
    """
    methods = mp.get_all_start_methods()
    if requested is not None:
        if requested not in methods:
            raise ConfigError(
                f"agent.start_method={requested}: use one of {', '.join(methods)} (or null)"
            )
        return requested
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def default_envs_per_worker(obs_space) -> int:
    """16 for vector observations, 1 (the paper) for images.

    On a cheap env such as CartPole a worker's time goes to the forward and backward passes,
    which cost about the same for 16 observations as for one: 16 envs per worker give 2
    workers on 2 cores 13x the env steps/s of one env each (README, Benchmarks). An image net's
    cost grows with the batch, and 16 workers x 16 Atari envs would hold 256 emulators.
    """
    return 1 if len(obs_space.shape) == 3 else 16


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


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
    ):
        workers = available_cores() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"agent.workers={workers}: must be >= 1 (null = all cores)")
        probe = make_env(ctx.env)
        if envs_per_worker is None:
            envs_per_worker = default_envs_per_worker(probe.observation_space)
        check_actor_critic(t_max=t_max, envs_per_worker=envs_per_worker, gae_lambda=gae_lambda)
        self.start_method = choose_start_method(start_method)
        self.model = build_actor_critic(
            ctx.net, probe.observation_space, probe.action_space, ctx.name, ctx.env.id, shared_torso
        )
        probe.close()
        self.model.share_memory()
        self.optimizer = instantiate(optimizer)(self.model.parameters())
        self.spec = WorkerSpec(
            ctx.env,
            ctx.net,
            ctx.name,
            ctx.seed,
            t_max,
            gamma,
            gae_lambda,
            value_coef,
            entropy_coef,
            max_grad_norm,
            lr,
            lr_anneal,
            ctx.total_steps,
            shared_torso,
            envs_per_worker,
        )
        self.n_workers = workers
        self.device = torch.device("cpu")  # Hogwild shares CPU memory; compute.device is unused
        self.step = 0
        self.updates = 0
        self.processes: list = []
        share_optimizer_state(self.optimizer)  # once: before the workers, and before a resume
        self._start()  # now, while the process has one thread (see choose_start_method)

    # Workers ---------------------------------------------------------------------------

    def _start(self) -> None:
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(["lab.rl.a3c"])  # imported once, not once per worker
        self.credits = ctx.Value("q", 0)  # env steps the workers may still take
        # Wakes idle workers. A semaphore, because a Condition's (or Event's) notify waits
        # for every sleeper to wake, and hangs for good if one of them was killed.
        self.wake = ctx.Semaphore(0)
        self.taken = ctx.Value("q", self.step)  # env steps taken so far: the schedules' clock
        self.reports = ctx.Queue()
        self.stop = ctx.Event()
        for wid in range(self.n_workers):
            process = ctx.Process(
                target=worker_main,
                name=f"lab-a3c-worker-{wid}",
                daemon=True,
                args=(
                    wid,
                    self.spec,
                    self.model,
                    self.optimizer,
                    self.credits,
                    self.wake,
                    self.taken,
                    self.reports,
                    self.stop,
                ),
            )
            process.start()
            self.processes.append(process)
        log.info(
            "a3c: %d workers x %d envs (%s)",
            self.n_workers,
            self.spec.envs_per_worker,
            self.start_method,
        )

    def _check_workers(self) -> None:
        for wid, process in enumerate(self.processes):
            if process.exitcode is not None:
                code = process.exitcode
                how = (
                    f"killed by {signal.Signals(-code).name}"
                    if code < 0
                    else f"exited with code {code}"
                )
                raise WorkerFailed(f"a3c worker {wid} died ({how})")

    def learn(self, budget: int) -> dict:
        """Grant ``budget`` env steps of credit and wait until the workers have used them.

        A worker takes whole vector steps (``envs_per_worker`` env steps each), so the last
        grant may overshoot by less than that; the overshoot is not carried over. The loop ends
        once the reported steps cover the budget, which is when every grant has been reported.
        """
        budget = max(budget, 1)
        self._grant(budget)
        finished = episode_lists()
        sums: dict[str, float] = {}
        n = 0
        outstanding = budget
        next_check = 0.0  # at once: a short call may end before the first tick of the clock
        while outstanding > 0:
            # On a clock, not only when the queue runs dry: the other workers may keep it busy.
            if time.monotonic() >= next_check:
                self._check_workers()
                next_check = time.monotonic() + POLL_SECONDS
            try:
                message = self.reports.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if message[0] == "error":
                raise WorkerFailed(f"a3c worker {message[1]} raised: {message[2]}")
            _, used, transitions, episodes, metrics = message
            outstanding -= used
            self.step += transitions
            self.updates += 1
            for key, values in episodes.items():
                finished[key].extend(values)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            n += 1
        out: dict = {k: v / n for k, v in sums.items()} | finished
        out["counter/updates"] = self.updates
        return out

    def _grant(self, budget: int) -> None:
        """Set the credits and wake the idle workers (nothing is in flight between calls).

        The lock is taken with a timeout: a worker killed while it held the lock would
        otherwise block the main process for good instead of failing the run. One token per
        worker wakes every sleeper; a token left over only makes a busy worker look once more.
        """
        lock = self.credits.get_lock()
        while not lock.acquire(timeout=POLL_SECONDS):
            self._check_workers()
        try:
            self.credits.value = budget
        finally:
            lock.release()
        for _ in self.processes:
            self.wake.release()

    # Acting, checkpoints ---------------------------------------------------------------

    def policy(self) -> Policy:
        """Greedy, on a snapshot of the shared weights."""
        return greedy_policy(copy.deepcopy(self.model), self.device)

    def state_dict(self, resumable: bool) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"step": self.step, "updates": self.updates},
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
        if self.processes:
            self.taken.value = self.step

    def close(self) -> None:
        """Stop every worker: ask, wait briefly, then kill what is left.

        A healthy worker stops within one rollout or one idle wait. One that does not is stuck,
        typically on a queue or lock that a killed worker held; workers ignore SIGTERM (the
        main process handles signals), so it is killed outright.
        """
        if not self.processes:
            return
        self.stop.set()
        deadline = time.monotonic() + 2.0
        for process in self.processes:
            process.join(timeout=max(deadline - time.monotonic(), 0.1))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join()
        self.reports.cancel_join_thread()
        self.processes = []


def worker_main(
    wid, spec: WorkerSpec, shared, optimizer, credits, wake, taken, reports, stop
) -> None:
    """One actor-learner. Signals go to the main process, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        _worker_loop(wid, spec, shared, optimizer, credits, wake, taken, reports, stop)
    except BaseException:
        reports.put(("error", wid, traceback.format_exc(limit=-3).strip().splitlines()[-1]))
        raise SystemExit(1) from None


def _worker_loop(wid, spec, shared, optimizer, credits, wake, taken, reports, stop):
    worker_seed = spec.seed + 1000 * (wid + 1)
    seed_everything(worker_seed)
    envs = make_vec_env(spec.env_cfg, spec.envs_per_worker, train=True)
    local = build_actor_critic(
        spec.net_cfg,
        envs.single_observation_space,
        envs.single_action_space,
        spec.name,
        spec.env_cfg.id,
        spec.shared_torso,
    )
    collector = RolloutCollector(envs, worker_seed, torch.device("cpu"))
    width = spec.envs_per_worker  # env steps in one vector step
    main = mp.parent_process()  # the main process, also when a forkserver started us
    shared_params = list(shared.parameters())
    local_params = list(local.parameters())
    clipped = local.clipped_parameters()
    while not stop.is_set():
        if not main.is_alive():
            return  # the main process is gone: leave no orphan behind
        with credits.get_lock():  # one lock for both, so one worker's schedule is reproducible
            k = min(spec.t_max, -(-credits.value // width)) if credits.value > 0 else 0
            credits.value -= k * width
            taken.value += k * width
            taken_now = taken.value
        if k == 0:  # idle: the main process evaluates, checkpoints, or the run is over
            wake.acquire(timeout=IDLE_SECONDS)
            continue
        with torch.no_grad():  # pull the shared weights (our nets have parameters, no buffers)
            torch._foreach_copy_(local_params, shared_params)
        episodes = episode_lists()
        rollout, transitions = collector.collect(local, k, episodes)
        loss, metrics = actor_critic_loss(
            local, rollout, spec.gamma, spec.gae_lambda, spec.value_coef, spec.entropy_coef
        )
        for local_p in local_params:
            local_p.grad = None
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(clipped, spec.max_grad_norm)
        for local_p, shared_p in zip(local_params, shared_params, strict=True):
            shared_p.grad = local_p.grad
        for group in optimizer.param_groups:
            group["lr"] = annealed_lr(spec.lr, spec.lr_anneal, taken_now, spec.total_steps)
        optimizer.step()
        metrics["train/grad_norm"] = grad_norm
        reports.put(
            (
                "report",
                k * width,
                transitions,
                episodes,
                {key: float(v) for key, v in metrics.items()},
            )
        )
    envs.close()
