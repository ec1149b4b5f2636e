"""The contracts in code: every task and agent provides what lab/task.py and lab/rl/agent.py
name, and the runner's loop keeps its promises with any task that does (a fake one here)."""

import inspect
import json
import os
import signal
from pathlib import Path
from typing import Protocol

import pytest
import torch

from lab import runner
from lab.compute import Compute
from lab.rl.agent import Agent
from lab.rl.task import RLTask
from lab.stop import never
from lab.task import Task
from tests.conftest import compose_config, read_metrics

CPU = Compute(torch.device("cpu"))


def protocol_members(protocol: type) -> dict[str, object]:
    """Attribute names (annotations) and methods/properties a Protocol declares."""
    members: dict[str, object] = dict.fromkeys(getattr(protocol, "__annotations__", {}))
    for name, value in vars(protocol).items():
        if not name.startswith("_") and (callable(value) or isinstance(value, property)):
            members[name] = value
    return members


def assert_conforms(obj: object, protocol: type[Protocol]) -> None:
    """``obj`` has every member of ``protocol``; its methods take the same parameters."""
    for name, declared in protocol_members(protocol).items():
        assert hasattr(obj, name), f"{type(obj).__name__} lacks {protocol.__name__}.{name}"
        if callable(declared) and not isinstance(declared, property):
            want = list(inspect.signature(declared).parameters)[1:]  # without self
            have = list(inspect.signature(getattr(obj, name)).parameters)
            assert have == want, f"{type(obj).__name__}.{name}{have} != {protocol.__name__}{want}"


def test_the_protocol_helper_catches_a_missing_member_and_a_renamed_parameter():
    class Complete:
        step = updates = 0

        def learn(self, budget, stop): ...
        def policy(self): ...
        def state_dict(self, resumable): ...
        def load_state_dict(self, state): ...
        def nets(self): ...
        def close(self): ...

    class Renamed(Complete):
        def state_dict(self, include_buffer): ...

    assert_conforms(Complete(), Agent)
    with pytest.raises(AssertionError, match="state_dict"):
        assert_conforms(Renamed(), Agent)
    with pytest.raises(AssertionError, match=r"lacks Task\.family"):
        assert_conforms(Complete(), Task)
    missing = type("Missing", (), {k: v for k, v in vars(Complete).items() if k != "policy"})
    with pytest.raises(AssertionError, match=r"lacks Agent\.policy"):
        assert_conforms(missing(), Agent)


@pytest.mark.parametrize(
    "agent", ["dqn", "a2c", "a3c", "sb3_dqn", "sb3_a2c", "sb3_ppo", "sb3_recurrent_ppo"]
)
def test_every_agent_and_the_rl_task_keep_the_contracts(agent):
    extra = ["agent.workers=1"] if agent == "a3c" else []
    task = RLTask(compose_config(f"agent={agent}", *extra), CPU)
    try:
        assert_conforms(task, Task)
        assert_conforms(task.agent, Agent)
    finally:
        task.close()


def test_the_generative_task_keeps_the_contract():
    from lab.gen.task import GenTask

    cfg = compose_config("model=vae", "fid.samples=50", "fid.kid_subset_size=20", "model.width=8")
    task = GenTask(cfg, CPU)
    try:
        assert_conforms(task, Task)
    finally:
        task.close()


class FakeTask:
    """Counts steps; its evaluation scores follow ``scores`` (one per evaluation)."""

    family, algo, name, step_unit = "rl", "fake", "counting", "env_steps"
    threshold_metric, headline_metric = "eval/score", "train/loss"

    def __init__(
        self, total_steps, scores, threshold=None, higher_is_better=True, stop_at=None, signals=()
    ):
        self.total_steps, self.scores, self.threshold = total_steps, scores, threshold
        self.higher_is_better, self.stop_at = higher_is_better, stop_at
        self.signals = signals or (signal.SIGTERM,)  # sent at stop_at, as `kill` or Ctrl-C would
        self.step, self.evaluations, self.closed = 0, 0, False

    def train_step(self, budget: int, stop=never) -> dict:
        self.step += budget
        if self.stop_at is not None and self.step >= self.stop_at:
            for signum in self.signals:
                os.kill(os.getpid(), signum)
        return {"train/loss": 1.0 / self.step, "counter/updates": self.step // 2}

    def evaluate(self, media_dir: Path) -> tuple[dict[str, float], dict]:
        self.evaluations += 1
        return {"eval/score": self.scores[self.evaluations - 1]}, {}

    def counters(self) -> dict[str, int]:
        return {"counter/updates": self.step // 2}

    def state_dict(self, resumable: bool) -> dict:
        return {"step": self.step, "evaluations": self.evaluations, "resumable": resumable}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.evaluations = state["step"], state["evaluations"]

    def nets(self) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True


def test_the_fake_task_keeps_the_contract():
    assert_conforms(FakeTask(10, []), Task)


def _run(monkeypatch, run_dir: Path, task: FakeTask, *overrides: str):
    run_dir.mkdir(exist_ok=True)  # as Hydra makes it
    monkeypatch.setattr(runner, "build_task", lambda cfg, compute: task)
    cfg = compose_config(
        "logger=none", "eval.interval=10", "log_interval=5", "checkpoint.interval=20", *overrides
    )
    return runner.run(cfg, run_dir)


def _checkpoint(run_dir: Path, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


@pytest.mark.parametrize("hib", [True, False])
def test_loop_keeps_the_best_weights_and_stops_at_the_threshold(tmp_path, monkeypatch, hib):
    sign = 1 if hib else -1  # the same story for a return (up is better) and a FID (down)
    scores = [sign * s for s in (1.0, 5.0, 3.0, 4.0, 9.0, 9.5)]
    task = FakeTask(60, scores, threshold=sign * 8.0, higher_is_better=hib)
    summary = _run(monkeypatch, tmp_path, task, "stop_on_threshold=true")
    assert task.closed
    assert (summary.status, summary.steps) == ("solved", 50)  # the 5th evaluation reached 8
    assert summary.threshold["reached_step"] == 50
    assert summary.best["eval/score"] == sign * 9.0
    best = _checkpoint(tmp_path, "best.pt")
    assert best["task"] == {"step": 50, "evaluations": 5, "resumable": False}
    assert best["runner"]["best"]["eval/score"] == sign * 9.0
    assert _checkpoint(tmp_path, "last.pt")["task"]["resumable"] is True

    # Until the threshold, best.pt followed the best score: 5 at step 20, not 3 or 4 after it.
    other = tmp_path / "no_threshold"
    task = FakeTask(40, scores, higher_is_better=hib)
    assert _run(monkeypatch, other, task).status == "completed"
    assert _checkpoint(other, "best.pt")["task"]["step"] == 20


def test_loop_stops_on_a_signal_with_a_checkpoint_and_resumes(tmp_path, monkeypatch):
    scores = [float(i) for i in range(10)]
    summary = _run(monkeypatch, tmp_path, FakeTask(100, scores, stop_at=35))
    assert (summary.status, summary.exit_code) == ("interrupted", 128 + signal.SIGTERM)
    assert summary.steps == 35  # stopped after the train_step that saw the signal
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
    saved = _checkpoint(tmp_path, "last.pt")
    assert saved["task"]["step"] == 35 and saved["runner"]["next_eval"] == 40

    resumed = FakeTask(100, scores)
    summary = _run(monkeypatch, tmp_path, resumed, f"resume={tmp_path}")
    assert summary.status == "completed" and summary.steps == 100
    assert resumed.evaluations == 10  # 3 before the signal, 7 after: none repeated or lost
    assert summary.metrics["eval/score"] == 9.0
    rows = read_metrics(tmp_path)
    eval_steps = [r["step"] for r in rows if "eval/score" in r]
    assert eval_steps == list(range(10, 101, 10))
    loss_steps = [r["step"] for r in rows if "train/loss" in r]
    assert loss_steps == sorted(set(loss_steps))  # no row logged twice across the resume
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 100


def test_ctrl_c_ends_interrupted_with_exit_130_and_a_second_stops_at_once(tmp_path, monkeypatch):
    summary = _run(
        monkeypatch,
        tmp_path / "one",
        FakeTask(100, [0.0] * 10, stop_at=35, signals=(signal.SIGINT,)),
    )
    assert (summary.status, summary.exit_code, summary.steps) == ("interrupted", 130, 35)

    # The second Ctrl-C arrives inside train_step: the run stops there, still checkpointed.
    task = FakeTask(100, [0.0] * 10, stop_at=35, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        _run(monkeypatch, tmp_path / "two", task)
    written = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (written["status"], written["steps"]) == ("interrupted", 35)
    assert _checkpoint(tmp_path / "two", "last.pt")["task"]["step"] == 35
    assert task.closed


def test_the_first_row_rates_are_taken_over_the_first_steps(tmp_path, monkeypatch):
    import time

    class Slow(FakeTask):
        def train_step(self, budget: int, stop=never) -> dict:
            time.sleep(0.05)  # 5 steps (one log interval) and 2 updates in 50 ms
            return super().train_step(budget, stop)

    _run(monkeypatch, tmp_path, Slow(20, [0.0, 0.0]))
    rows = [r for r in read_metrics(tmp_path) if "perf/env_steps_per_s" in r]
    first = rows[0]
    assert first["step"] == 5
    assert 20 < first["perf/env_steps_per_s"] < 100, first  # about 5 / 0.05 = 100 at most
    assert 8 < first["perf/updates_per_s"] < 40, first  # about 2 / 0.05 = 40 at most
