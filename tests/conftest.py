"""Helpers shared by the tests: run the CLI, compose the shipped configs, check contracts."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lab.config import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # in-process tests too: one thread per pytest worker (see _cli)

# A budget small enough for a smoke run of DQN on CartPole (a few seconds).
TINY_DQN = [
    "agent.total_steps=2000",
    "agent.learning_starts=200",
    "eval.interval=1000",
    "eval.episodes=2",
    "log_interval=500",
    "checkpoint.interval=1000",
]


def lab(
    run_dir: Path, *overrides: str, timeout: float = 300, **popen
) -> subprocess.CompletedProcess:
    """``python -m lab`` into ``run_dir`` with W&B off unless an override turns it on."""
    cmd, env = _cli(f"hydra.run.dir={run_dir}", *overrides)
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **popen
    )


def _cli(*args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a ``python -m lab`` test run (W&B off, unbuffered)."""
    # One torch thread per run: pytest -n 2 runs two tests at once on CI's 2 cores, and two
    # image runs with every core's threads each slow each other down 10x or more.
    env = os.environ | {"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "lab", *args], env


def lab_sweep(sweep_dir: Path, *overrides: str, timeout: float = 600):
    """``python -m lab -m`` into ``sweep_dir``, W&B off."""
    cmd, env = _cli("-m", f"hydra.sweep.dir={sweep_dir}", *overrides)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


_BACKGROUND: list[subprocess.Popen] = []


def lab_background(run_dir: Path, *overrides: str, sweep: bool = False) -> subprocess.Popen:
    """A run (or with ``sweep``, a sweep into ``run_dir``) in its own session; whatever is
    left of it is killed when the test ends."""
    where = ("-m", f"hydra.sweep.dir={run_dir}") if sweep else (f"hydra.run.dir={run_dir}",)
    cmd, env = _cli(*where, *overrides)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _BACKGROUND.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _kill_background_runs():
    """A failed test must not leave a 10-million-step run behind to slow the next ones."""
    yield
    while _BACKGROUND:
        proc = _BACKGROUND.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the run and any worker it left
        proc.wait()


def wait_for_rows(run_dir: Path, count: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Wait until a background run has logged ``count`` rows of metrics.jsonl."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise TimeoutError(f"{run_dir}: fewer than {count} metrics rows after {timeout} s")


def stop_with_sigterm(proc: subprocess.Popen, run_dir: Path) -> dict:
    """SIGTERM a background run: it must end ``interrupted`` with exit code 143."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    return summary


def compose_config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def read_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert_valid_summary(summary)
    return summary


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_valid_summary(summary: dict) -> None:
    """The summary.json contract of docs/contracts.md."""
    expected = {
        "status",
        "family",
        "algo",
        "task",
        "seed",
        "device",
        "steps",
        "wall_seconds",
        "metrics",
        "best",
        "threshold",
    }
    assert expected <= summary.keys(), expected - summary.keys()
    assert summary["status"] in ("completed", "solved", "interrupted", "failed")
    assert summary["family"] in ("rl", "generative")
    assert isinstance(summary["steps"], int)
    assert summary["steps"] > 0 or summary["status"] == "failed"  # failed before the first step
    assert isinstance(summary["wall_seconds"], float)
    assert {"metric", "value", "reached_step", "reached_seconds"} <= summary["threshold"].keys()
    if summary["family"] == "rl" and summary["status"] != "failed":
        assert {"eval/return_mean", "eval/return_std"} <= summary["metrics"].keys()
    if summary["family"] == "generative" and summary["status"] != "failed":
        assert {"eval/fid", "eval/fid_floor", "eval/fid_samples"} <= summary["metrics"].keys()


@pytest.fixture(scope="session", autouse=True)
def shared_fid_cache(tmp_path_factory):
    """One FID classifier cache for the whole session (xdist workers share the parent dir)."""
    cache = tmp_path_factory.getbasetemp().parent / "lab-cache"
    os.environ["LAB_CACHE"] = str(cache)
    return cache


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
