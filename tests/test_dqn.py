"""DQN's pieces in process: learning-rate annealing, the logged action gap, Double DQN's forward."""

import pytest
import torch

from lab.compute import Compute
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
