"""DQN's pieces in process: learning-rate annealing, the logged action gap, Double DQN's forward,
and the windows of observations a windowed torso (net=transformer) learns from."""

import numpy as np
import pytest
import torch

from lab.compute import Compute
from lab.rl.replay import ObsHistory, Window, WindowReplay
from lab.rl.task import build_agent
from tests.conftest import compose_config

CPU = Compute(torch.device("cpu"))


def dqn(*overrides: str, env: str = "cartpole"):
    cfg = compose_config(
        "agent=dqn",
        f"env={env}",
        "agent.total_steps=4000",
        "agent.learning_starts=64",
        "agent.batch_size=8",
        "agent.buffer_size=1000",
        *overrides,
    )
    return build_agent(cfg, CPU)


@pytest.mark.parametrize("anneal", [True, False])
def test_learning_rate_anneals_linearly_to_zero_only_when_asked(anneal):
    agent = dqn(f"agent.lr_anneal={anneal}", "agent.lr=1e-3")
    metrics = agent.learn(1000)
    # Set before each vector step's updates, from the step counter after that step.
    expected = 1e-3 * (1 - agent.step / 4000) if anneal else 1e-3
    assert metrics["train/learning_rate"] == pytest.approx(expected)
    agent.close()


def test_action_gap_is_best_minus_second_best_q():
    agent = dqn("agent.double=false")
    agent.learn(200)
    batch = agent.buffer.sample(32, CPU.device)
    _, _, gap = agent.loss(batch)
    top2 = agent.q(batch.obs).topk(2, dim=1).values
    assert gap.item() == pytest.approx((top2[:, 0] - top2[:, 1]).mean().item())
    assert gap.item() > 0
    assert "train/action_gap" in agent.learn(200)
    agent.close()


def test_double_dqn_loss_is_the_same_with_one_forward_or_two():
    """Vector observations share one forward of s and s'; images give s' its own (no graph)."""
    agent = dqn()
    agent.learn(200)
    batch = agent.buffer.sample(32, CPU.device)
    assert agent.fuse_double
    fused = agent.loss(batch)[0]
    agent.fuse_double = False
    separate = agent.loss(batch)[0]
    assert fused.item() == pytest.approx(separate.item(), rel=1e-6)
    agent.close()
    assert not dqn("net.features=32", env="catch").fuse_double


def test_throughput_bench_times_training_alone(capsys):
    from lab.rl.bench import main

    main(["warmup=200", "steps=200", "agent.learning_starts=100", "env=cartpole"])
    line = capsys.readouterr().out
    assert line.startswith("dqn on CartPole-v1: ") and "env steps/s" in line and "updates/s" in line


def test_history_windows_follow_episodes_and_zero_pad_before_their_start():
    """Two envs; env 0's episode restarts at its third observation. Windows of 3, oldest first."""
    history = ObsHistory(capacity=8, obs_shape=(1,), obs_dtype=np.float32, num_envs=2, context=3)
    ids = [
        history.record(np.array([[10.0 * t], [10.0 * t + 1]]), np.array(s))
        for t, s in enumerate([(True, True), (False, False), (True, False), (False, False)])
    ]
    obs, valid = history.windows(np.array([ids[3][0], ids[3][1], ids[1][0]]))
    np.testing.assert_array_equal(obs[..., 0], [[0, 20, 30], [11, 21, 31], [0, 0, 10]])
    np.testing.assert_array_equal(valid, [[0, 1, 1], [1, 1, 1], [0, 1, 1]])
    for t in (4, 5):  # 4 more ids in a ring of 8: ids 0..3 are overwritten
        history.record(np.array([[10.0 * t], [10.0 * t + 1]]), np.array([False, False]))
    obs, valid = history.windows(np.array([ids[2][1]]))  # 21 is live; 11 before it is gone
    np.testing.assert_array_equal(valid, [[0, 0, 1]])
    np.testing.assert_array_equal(obs[..., 0], [[0, 0, 21]])


def test_dqn_with_a_transformer_learns_from_windows_and_resumes_them():
    windowed = ("net=transformer", "net.context=4", "net.width=16", "env=cartpole_novel")
    agent = dqn(*windowed, "agent.n_step=1")
    assert isinstance(agent.buffer, WindowReplay) and not agent.fuse_double
    metrics = agent.learn(300)
    assert metrics["counter/updates"] > 0 and np.isfinite(metrics["train/loss"])
    batch = agent.buffer.sample(16, CPU.device)
    assert isinstance(batch.obs, Window) and batch.obs.obs.shape == (16, 4, 2)
    assert batch.obs.valid[:, -1].all()  # the step itself is always real
    # Each transition's next window is its window moved on by one step (or a new episode's).
    moved = batch.next_obs.valid[:, -1] & batch.next_obs.valid[:, -2]
    torch.testing.assert_close(batch.next_obs.obs[moved, :-1], batch.obs.obs[moved, 1:])
    restored = dqn(
        "net=transformer", "net.context=4", "net.width=16", "env.id=lab/CartPoleNoVel-v1"
    )
    restored.load_state_dict(agent.state_dict(resumable=True))
    ids = np.arange(agent.buffer.history.written - 20, agent.buffer.history.written)
    saved, loaded = agent.buffer.history.windows(ids), restored.buffer.history.windows(ids)
    for a, b in zip(saved, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
    obs = np.zeros((3, 2), np.float32)
    assert agent.policy()(obs).shape == (3,)
    agent.close()
    restored.close()
