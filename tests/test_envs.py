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
    run = tmp_path / "run"
    overrides = [
        "env=pong",
        "+env.kwargs.max_num_frames_per_episode=800",
        "agent.total_steps=400",
        "agent.num_envs=2",
        "agent.buffer_size=1000",
        "agent.learning_starts=100",
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
    assert summary["metrics"]["eval/return_mean"] <= 0  # an untrained agent loses points


def test_evaluation_video_is_written(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=none", "eval.video=true")
    assert result.returncode == 0, result.stderr
    videos = sorted((run / "media").glob("episode_*"))
    assert len(videos) == 2 and all(v.suffix in (".mp4", ".gif") for v in videos)
    assert all(v.stat().st_size > 1000 for v in videos)


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py not installed")
def test_a3c_on_pong_smoke_run(tmp_path):
    """Spawned workers build the Atari wrappers; the CNN torso is shared by actor and critic."""
    run = tmp_path / "run"
    overrides = [
        "agent=a3c",
        "env=pong",
        "agent.workers=2",
        "agent.total_steps=400",
        "+env.kwargs.max_num_frames_per_episode=400",
        "eval.interval=400",
        "eval.episodes=1",
        "log_interval=200",
        "logger=none",
    ]
    result = lab(run, *overrides)
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["algo"] == "a3c" and summary["steps"] == 400
