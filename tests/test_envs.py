"""The lab's own environments, Atari through ale-py, and evaluation videos."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401
from tests.conftest import TINY_DQN, lab, read_summary


def test_catch_passes_the_gymnasium_env_checker():
    env = gym.make("lab/Catch-v0")
    check_env(env.unwrapped)
    assert env.spec.reward_threshold == 0.9


def test_catch_rewards_a_catch_and_punishes_a_miss():
    env = gym.make("lab/Catch-v0").unwrapped
    env.reset(seed=0)
    ball_col = env._ball[1]
    total, done = 0.0, False
    while not done:  # follow the ball: always caught
        action = 1 + int(np.sign(ball_col - env._paddle))
        _, reward, done, _, _ = env.step(action)
        total += reward
    assert total == 1.0
    env.reset(seed=0)
    total, done = 0.0, False
    target = 0 if ball_col >= 2 else env.cols - 1  # run to the far side: always missed
    while not done:
        _, reward, done, _, _ = env.step(1 + int(np.sign(target - env._paddle)))
        total += reward
    assert total == -1.0


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py not installed")
def test_atari_pong_smoke_run(tmp_path):
    """DQN through the CLI on Atari: frames skipped, episodes booked as the game scores them."""
    from tests.conftest import read_metrics

    run = tmp_path / "run"
    overrides = [
        "env=pong",
        "+env.kwargs.max_num_frames_per_episode=400",  # at most 100 agent steps of 4 frames
        "agent.total_steps=400",
        "agent.num_envs=2",
        "agent.buffer_size=1000",
        "agent.learning_starts=300",  # 50 updates: enough to smoke-test learning on a CNN
        "agent.gradient_steps=1",
        "agent.batch_size=8",
        "eval.interval=400",
        "eval.episodes=1",
        "log_interval=200",
        "logger=none",
        "threads=2",
    ]
    result = lab(run, *overrides)
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["task"] == "ALE/Pong-v5" and summary["steps"] >= 400
    # Each env played 200 steps, so training episodes ended and were booked (2 or more each).
    lengths = [
        r["rollout/episode_length"] for r in read_metrics(run) if "rollout/episode_length" in r
    ]
    assert lengths and all(0 < length <= 100 for length in lengths), lengths
    metrics = summary["metrics"]
    assert 0 < metrics["eval/length_mean"] <= 100  # without frame skipping: about 400
    assert metrics["eval/return_mean"].is_integer() and -21 <= metrics["eval/return_mean"] <= 21


def test_evaluation_video_is_written(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=none", "eval.video=true")
    assert result.returncode == 0, result.stderr
    videos = sorted((run / "media").glob("episode_*"))
    assert len(videos) == 2 and all(v.suffix in (".mp4", ".gif") for v in videos)
    assert all(v.stat().st_size > 1000 for v in videos)


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py not installed")
def test_a3c_on_pong_smoke_run():
    """Spawned workers build the Atari wrappers; the CNN torso is shared by actor and critic."""
    import torch

    from lab.compute import Compute
    from lab.nets import NatureCNN
    from lab.rl.task import build_agent
    from tests.conftest import compose_config

    cfg = compose_config(
        "agent=a3c",
        "env=pong",
        "agent.workers=2",
        "agent.start_method=spawn",  # a fresh interpreter: nothing inherited, all rebuilt
        "+env.kwargs.max_num_frames_per_episode=400",  # at most 100 agent steps of 4 frames
    )
    agent = build_agent(cfg, Compute(torch.device("cpu")))
    try:
        assert [type(p).__name__ for p in agent.pool.processes] == ["SpawnProcess"] * 2
        model = agent.model
        assert model.value_torso is None and isinstance(model.torso, NatureCNN)
        assert sum(isinstance(m, NatureCNN) for m in model.modules()) == 1
        out = agent.learn(400)
        lengths = out["rollout/episode_length"]  # 200 steps per worker: episodes ended
        assert lengths and all(0 < length <= 100 for length in lengths), lengths
        # One env per worker for images: 400 credits exactly, of which the steps that only
        # reset an env after an episode's end are no transitions.
        assert 400 - len(lengths) <= agent.step < 400
    finally:
        agent.close()
