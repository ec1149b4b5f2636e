"""The runner's contracts: run directory, determinism, signals, resume, --help."""

import torch

from tests.conftest import (
    TINY_DQN,
    lab,
    lab_background,
    read_metrics,
    read_summary,
    stop_with_sigterm,
    wait_for_rows,
)

WALL_CLOCK_KEYS = ("time", "perf/")


def _without_wall_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK_KEYS)} for row in rows]


def test_tiny_run_writes_the_run_directory_contract(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=none")
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "completed"
    assert (summary["algo"], summary["task"], summary["seed"]) == ("dqn", "CartPole-v1", 0)
    assert summary["steps"] >= 2000
    assert summary["threshold"]["metric"] == "eval/return_mean"
    assert summary["threshold"]["value"] == 475.0
    for name in (".hydra/config.yaml", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    rows = read_metrics(run)
    assert all(isinstance(r["step"], int) and isinstance(r["time"], float) for r in rows)
    assert any("train/loss" in r and "perf/env_steps_per_s" in r for r in rows)
    assert any("rollout/episode_return" in r for r in rows)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert [r["step"] for r in evals][-1] == summary["steps"]
    assert evals[-1]["eval/return_mean"] == summary["metrics"]["eval/return_mean"]
    assert "COMPLETED" in result.stdout and str(run) in result.stdout
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["task"]["counters"]["step"] == summary["steps"]


def test_same_seed_gives_identical_metrics(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert lab(run, *TINY_DQN, "logger=none", "seed=7").returncode == 0
    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert len(rows_a) > 3
    assert _without_wall_clock(rows_a) == _without_wall_clock(rows_b)
    other = tmp_path / "c"
    assert lab(other, *TINY_DQN, "logger=none", "seed=8").returncode == 0
    assert _without_wall_clock(read_metrics(other)) != _without_wall_clock(rows_a)


def test_sigterm_checkpoints_then_resume_continues_the_step_counter(tmp_path):
    run = tmp_path / "run"
    long_run = [
        "agent.total_steps=200000",
        "agent.learning_starts=200",
        "log_interval=500",
        "eval.interval=1000",
        "eval.episodes=2",
        "checkpoint.interval=100000",
        "logger=none",
    ]
    proc = lab_background(run, *long_run)
    wait_for_rows(run, 4, proc)
    interrupted = stop_with_sigterm(proc, run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    stopped_at = state["task"]["counters"]["step"]
    assert stopped_at == interrupted["steps"] < 200000
    assert state["task"]["buffer"]["size"] > 0
    assert state["runner"]["next_eval"] > 0

    # Resume from the directory alone: its overrides are reused, ours (a shorter budget) win.
    budget = stopped_at + 1500
    result = lab(run, f"resume={run}", f"agent.total_steps={budget}")
    assert result.returncode == 0, result.stderr
    resumed = read_summary(run)
    assert resumed["status"] == "completed"
    assert resumed["steps"] >= budget
    assert resumed["wall_seconds"] > interrupted["wall_seconds"] * 0.99
    steps = [r["step"] for r in read_metrics(run) if "train/loss" in r]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    after = [s for s in steps if s > stopped_at]
    assert after and after[0] - stopped_at <= 500 + 4  # the log interval, plus one vector step
    resumed_state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert resumed_state["task"]["counters"]["updates"] > state["task"]["counters"]["updates"]


def test_stop_on_threshold_ends_as_solved(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=none", "stop_on_threshold=true", "eval.threshold=5")
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "solved"
    assert summary["threshold"]["value"] == 5.0
    assert summary["threshold"]["reached_step"] == summary["steps"] < 2000
    assert summary["threshold"]["reached_seconds"] <= summary["wall_seconds"]


def test_help_lists_groups_and_options(tmp_path):
    from lab.config import CONF_DIR

    result = lab(tmp_path / "run", "--help")
    assert result.returncode == 0
    listed = {}
    for line in result.stdout.splitlines():
        group, sep, rest = line.partition(": ")
        if sep and group and " " not in group and "," in rest + ",":
            listed[group] = rest.split(", ")
    for group in ("agent", "env", "net", "model", "dataset", "logger", "experiment"):
        shipped = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        assert listed.get(group) == shipped, (group, listed.get(group))
    assert sorted(listed["hparams_search"]) == sorted(
        p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml")
    )
    assert "wandb sync" in result.stdout
