"""Ctrl-C and SIGTERM are honoured within one step, however long the log interval.

Each task is slowed down (a sleep in its step) so that one log interval would take minutes;
a signal sent a second into the run must end it within about a second, checkpointed.
"""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lab import runner
from tests.conftest import compose_config

SLOW = 0.05  # seconds added to every step: a 10k-step log interval would take 8+ minutes


def _run_and_interrupt(run_dir: Path, started: dict, *overrides: str):
    run_dir.mkdir()
    cfg = compose_config(
        "logger=none",
        "log_interval=10000",
        "eval.interval=10000",
        "checkpoint.interval=10000",
        "eval.episodes=1",
        *overrides,
    )
    try:
        summary = runner.run(cfg, run_dir)
    finally:
        started["timer"].cancel()
    return time.monotonic() - started["at"], summary


def _slowed(monkeypatch, owner, name: str, delay: float = SLOW, arm: bool = True) -> dict:
    """Every call sleeps ``delay``; with ``arm``, the first call also arms a SIGINT to this
    process one second later."""
    original, started, pid = getattr(owner, name), {}, os.getpid()

    def slow(*args, **kwargs):
        if arm and not started:
            started["at"] = time.monotonic() + 1.0
            started["timer"] = threading.Timer(1.0, os.kill, (pid, signal.SIGINT))
            started["timer"].start()
        time.sleep(delay)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    return started


CASES = {
    "dqn": (("lab.rl.dqn", "DQN", "update"), ["agent.learning_starts=64", "agent.batch_size=16"]),
    "a2c": (("lab.rl.a2c", None, "actor_critic_loss"), ["agent=a2c"]),
    "sb3_a2c": (("lab.rl.sb3", "SB3Agent", "_callback"), ["agent=sb3_a2c"]),
    "a3c": (
        ("lab.rl.a3c", None, "actor_critic_loss"),
        ["agent=a3c", "agent.workers=2", "agent.envs_per_worker=1"],
    ),
    "vae": (
        ("lab.gen.autoencoders", "VAE", "update"),
        ["model=vae", "model.width=8", "fid.samples=50", "fid.kid_subset_size=20"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_signal_stops_a_slow_run_within_a_step(tmp_path, monkeypatch, case):
    import importlib

    (module, cls, name), overrides = CASES[case]
    owner = importlib.import_module(module)
    owner = getattr(owner, cls) if cls else owner
    if case == "sb3_a2c":  # SB3's loop is its own: slow the env steps it takes
        from stable_baselines3.common.vec_env import DummyVecEnv

        owner, name = DummyVecEnv, "step_wait"
    if case == "a3c":
        from lab.rl.a3c import A3C

        _slowed(monkeypatch, owner, name, arm=False)  # in the workers, forked after this
        started = _slowed(monkeypatch, A3C, "learn", delay=0.0)  # in the main process
    else:
        started = _slowed(monkeypatch, owner, name)
    steps = "model.total_steps=100000" if case == "vae" else "agent.total_steps=1000000"
    seconds, summary = _run_and_interrupt(tmp_path / "run", started, steps, *overrides)
    assert (summary.status, summary.exit_code) == ("interrupted", 130)
    assert seconds < 2.0, seconds  # one step and the checkpoint after the signal, not minutes
    assert 0 < summary.steps < 10000
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
