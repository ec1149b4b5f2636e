"""SB3 baselines run through the same runner and leave the same summary as lab's agents."""

import pytest

from tests.conftest import lab, read_metrics, read_summary

SMOKE = [
    "agent.total_steps=1200",
    "eval.interval=600",
    "eval.episodes=3",
    "log_interval=300",
    "checkpoint.interval=600",
    "logger=none",
]


@pytest.mark.parametrize("agent", ["sb3_dqn", "sb3_a2c"])
def test_sb3_smoke_run_writes_a_valid_summary(tmp_path, agent):
    run = tmp_path / "run"
    result = lab(run, f"agent={agent}", *SMOKE)
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "completed"
    assert summary["algo"] == agent and summary["task"] == "CartPole-v1"
    assert summary["steps"] >= 1200
    evals = [r for r in read_metrics(run) if "eval/return_mean" in r]
    assert len(evals) >= 2  # evaluated on the runner's schedule, not SB3's
    assert any("rollout/episode_return" in r for r in read_metrics(run))
    assert (run / "checkpoints" / "last.pt").is_file()


def test_sb3_schedule_spans_the_whole_budget_across_chunks(tmp_path):
    """ε must decay over agent.total_steps even though SB3 learns in runner-sized chunks."""
    run = tmp_path / "run"
    overrides = [
        "agent=sb3_dqn",
        "agent.total_steps=4000",
        "agent.hyperparams.exploration_fraction=0.5",
        "agent.hyperparams.train_freq=4",
        "agent.hyperparams.gradient_steps=1",
        "eval.interval=1000",
        "eval.episodes=1",
        "log_interval=1000",
        "logger=none",
    ]
    assert lab(run, *overrides).returncode == 0
    eps = {r["step"]: r["train/epsilon"] for r in read_metrics(run) if "train/epsilon" in r}
    # Linear from 1.0 to the zoo's 0.04 over 2000 steps: 0.52 at step 1000, the floor from 2000 on.
    first = min(eps)
    assert eps[first] == pytest.approx(1.0 - 0.96 * first / 2000, abs=0.01)
    assert eps[max(eps)] == pytest.approx(0.04)
