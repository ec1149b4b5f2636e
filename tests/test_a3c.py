"""A3C (lab/rl/a3c.py): exact step counts, determinism, faults, resume, learning.

The pool's own mechanics (credits, faults, shutdown) are tested with toy workers in
tests/test_a3c_workers.py; here the same promises are checked through the agent and the CLI.
"""

import multiprocessing
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from gymnasium.envs.classic_control import CartPoleEnv

from lab import runner
from lab.compute import Compute, seed_everything
from lab.rl.task import build_agent
from lab.rl.workers import WorkerFailed
from tests.conftest import (
    assert_one_line_error,
    compose_config,
    lab,
    lab_background,
    lab_sweep,
    read_metrics,
    read_summary,
    stop_with_sigterm,
    wait_for_rows,
)
from tests.test_a3c_workers import alive

# An A3C run long enough to be stopped from outside (it never reaches its budget in a test).
LONG_A3C = [
    "agent=a3c",
    "agent.workers=2",
    "agent.envs_per_worker=16",
    "agent.total_steps=10000000",
    "log_interval=500",
    "eval.interval=1000",
    "eval.episodes=2",
    "logger=none",
]
SMALL_A3C = [
    "agent=a3c",
    "agent.total_steps=3000",
    "eval.interval=1000",
    "eval.episodes=3",
    "log_interval=500",
    "checkpoint.interval=1000",
    "logger=none",
]


class BreaksInAWorker(CartPoleEnv):
    """CartPole that raises once it has taken ``after`` steps in the process named ``breaks_in``,
    and writes the time it did so to ``mark``."""

    def __init__(self, breaks_in: str, after: int, mark: str, **kwargs):
        super().__init__(**kwargs)
        self.breaks_in, self.after, self.mark, self.steps = breaks_in, after, Path(mark), 0

    def step(self, action):
        self.steps += 1
        if self.steps > self.after and multiprocessing.current_process().name == self.breaks_in:
            self.mark.write_text(str(time.time()))
            raise RuntimeError(f"env broke after {self.after} steps")
        return super().step(action)


gym.register("lab_test/BreaksInAWorker-v0", entry_point=BreaksInAWorker, max_episode_steps=500)


def _a3c(*overrides: str):
    """An A3C agent built as the runner builds it (seeded first), its workers started."""
    cfg = compose_config("agent=a3c", *overrides)
    seed_everything(cfg.seed)
    return build_agent(cfg, Compute(torch.device("cpu")))


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _workers(pid: int) -> list[int]:
    return [
        c
        for c in _children(pid)
        if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()
    ]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _learn_three_times(seed: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    agent = _a3c("agent.workers=1", f"seed={seed}")
    try:
        rows = [agent.learn(600) for _ in range(3)]
        return rows, {k: v.clone() for k, v in agent.model.state_dict().items()}
    finally:
        agent.close()


def test_a3c_with_one_worker_is_deterministic():
    rows, weights = _learn_three_times(seed=3)
    again, same_weights = _learn_three_times(seed=3)
    other, other_weights = _learn_three_times(seed=4)
    assert rows[0]["rollout/episode_return"]  # episodes ended: their returns are compared too
    assert rows == again
    assert all(torch.equal(weights[k], same_weights[k]) for k in weights)
    assert rows != other
    assert not any(torch.equal(weights[k], other_weights[k]) for k in weights)


@pytest.mark.parametrize("envs", [1, 4])
def test_a3c_counts_env_steps_exactly_and_runs_lstm(tmp_path, envs):
    run = tmp_path / "run"
    result = lab(run, *SMALL_A3C, "agent.workers=2", f"agent.envs_per_worker={envs}", "net=lstm")
    assert result.returncode == 0, result.stderr
    # Credits make the counter exact; a worker takes whole vector steps, so a grant may be
    # overshot by less than one of them (envs - 1 env steps), never more.
    steps = read_summary(run)["steps"]
    assert 3000 <= steps < 3000 + envs
    evals = [r["step"] for r in read_metrics(run) if "eval/return_mean" in r]
    targets = [1000, 2000, 3000]
    assert all(0 <= step - t < envs for step, t in zip(evals, targets, strict=True)), evals


def test_a3c_worker_that_keeps_raising_fails_the_run_with_its_error_and_leaves_no_process(
    tmp_path,
):
    mark = tmp_path / "raised_at"
    cfg = compose_config(
        *LONG_A3C,
        "env.id=lab_test/BreaksInAWorker-v0",
        "+env.kwargs.breaks_in=lab-a3c-worker-1",  # each replacement of worker 1 too
        "+env.kwargs.after=100",
        f"+env.kwargs.mark={mark}",
        "agent.max_restarts=2",
        "checkpoint.interval=1000",
    )
    message = (
        r"a3c workers keep dying \(3 within 60 s, more than agent.max_restarts=2\); "
        r"the last, worker 1, raised RuntimeError: env broke after 100 steps"
    )
    with pytest.raises(WorkerFailed, match=f"^{message}$"):
        runner.run(cfg, tmp_path)  # in-process: the workers fork with the env registered
    returned_at = time.time()
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed"
    assert re.fullmatch(f"WorkerFailed: {message}", summary["error"])
    # The rollouts of 16 envs took 100 steps each; the run ended soon after the third broke.
    assert returned_at - float(mark.read_text()) < 3.0
    assert not [p.name for p in multiprocessing.active_children() if "a3c" in p.name]


def test_a3c_worker_killed_is_replaced_and_the_run_completes(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, *LONG_A3C, "agent.total_steps=40000")
    wait_for_rows(run, 2, proc)
    workers = _workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    time.sleep(1.0)  # its replacement starts within a poll
    everyone = set(workers) | set(_workers(proc.pid))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = read_summary(run)
    assert summary["status"] == "completed"
    assert 40000 <= summary["steps"] < 40000 + 16  # the lost rollout was redone, not lost
    log_text = (run / "lab.log").read_text()
    assert "a3c worker 0 was killed by SIGKILL: replaced (1 so far)" in log_text
    rows = [r for r in read_metrics(run) if "train/actors_replaced" in r]
    assert rows[-1]["train/actors_replaced"] == 1
    assert summary["actors_replaced"] == 1  # the issue asks summary.json to say so
    assert len(everyone) == 3  # the two, then the replacement
    assert not [pid for pid in everyone if alive(pid)]


def test_a3c_worker_killed_past_max_restarts_fails_the_run_in_one_line(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, *LONG_A3C, "agent.max_restarts=0")
    wait_for_rows(run, 2, proc)
    everyone = _children(proc.pid)
    os.kill(_workers(proc.pid)[0], signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - killed_at < 10
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(
        result, "a3c workers keep dying", "agent.max_restarts=0", "worker 0, was killed by SIGKILL"
    )
    summary = read_summary(run)
    assert summary["status"] == "failed" and "SIGKILL" in summary["error"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["model"]
    time.sleep(0.5)
    assert not [pid for pid in everyone if alive(pid)]


def test_a3c_interrupt_then_resume_continues_the_step_counter(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, *LONG_A3C)
    wait_for_rows(run, 3, proc)
    children = _children(proc.pid)
    interrupted = stop_with_sigterm(proc, run)
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)]
    stopped_at = interrupted["steps"]
    result = lab(run, f"resume={run}", f"agent.total_steps={stopped_at + 1500}")
    assert result.returncode == 0, result.stderr
    resumed = read_summary(run)
    assert resumed["status"] == "completed"
    assert 0 <= resumed["steps"] - (stopped_at + 1500) < 16  # less than one vector step over
    steps = [r["step"] for r in read_metrics(run) if "train/policy_loss" in r]
    assert steps == sorted(steps) and steps[-1] == resumed["steps"]


@pytest.mark.slow
def test_a3c_final_policy_holds_at_a_fixed_seed(tmp_path):
    """The whole default budget with one worker (reproducible): the policy the run ends with
    scores >= 475. Seed 1003 is a tuning seed (solved at 12.5k steps, 500 at the end); the fresh
    seeds' figures are in the README ("Final policies on seeds nobody tuned on")."""
    run = tmp_path / "run"
    result = lab(run, "agent=a3c", "agent.workers=1", "seed=1003", "logger=none", timeout=600)
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "completed", summary
    assert summary["metrics"]["eval/return_mean"] >= 475, summary  # the final policy


@pytest.mark.slow
def test_a3c_with_two_workers_learns_cartpole(tmp_path):
    run = tmp_path / "run"
    result = lab(
        run,
        "agent=a3c",
        "agent.workers=2",
        "seed=0",
        "stop_on_threshold=true",
        "logger=none",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "solved", summary


def test_idle_a3c_workers_sleep_and_wake_when_granted_steps():
    agent = _a3c("agent.workers=2")
    try:
        updates = agent.learn(1000)["counter/updates"]
        pids = [p.pid for p in agent.pool.processes]
        before = [_cpu_seconds(pid) for pid in pids]
        time.sleep(2.0)  # the main process would evaluate here: the workers should not compete
        used = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        assert max(used) < 0.05, used
        started = time.monotonic()
        assert agent.learn(1000)["counter/updates"] > updates
        assert time.monotonic() - started < 1.0  # and they answer the next grant
    finally:
        agent.close()


def test_a3c_workers_started_by_a_forkserver_train(tmp_path):
    # A forkserver is the workers' OS parent: they must still know the main process is alive.
    run = tmp_path / "run"
    result = lab(run, *SMALL_A3C, "agent.workers=2", "agent.start_method=forkserver")
    assert result.returncode == 0, result.stderr
    assert read_summary(run)["status"] == "completed"
    assert "(forkserver)" in (run / "lab.log").read_text()


def test_every_job_of_a_sweep_forks_its_workers(tmp_path):
    # The first job's progress bar must leave no thread behind that would force a forkserver.
    sweep = tmp_path / "sweep"
    result = lab_sweep(sweep, *SMALL_A3C, "agent.total_steps=1000", "agent.workers=1", "seed=0,1")
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert "a3c: 1 workers x 16 envs (fork)" in (sweep / job / "lab.log").read_text()


def test_envs_per_worker_defaults_to_16_for_vectors_and_1_for_images():
    from gymnasium import spaces

    from lab.rl.a3c import default_envs_per_worker

    assert default_envs_per_worker(spaces.Box(-1, 1, (4,))) == 16
    assert default_envs_per_worker(spaces.Box(0, 255, (4, 84, 84), dtype="uint8")) == 1
