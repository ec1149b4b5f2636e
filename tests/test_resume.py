"""Resume restores what a run learned (weights, optimizer, replay buffer, counters), not only
its step counters; a checkpoint holds the replay buffer only when asked to."""

import pytest
import torch

from lab import checkpoint
from lab.compute import Compute
from lab.rl.task import RLTask
from tests.conftest import TINY_DQN, compose_config, lab

CPU = Compute(torch.device("cpu"))
AGENTS = {
    "a2c": [],
    "dqn": ["agent.learning_starts=64", "agent.batch_size=16"],
    "sb3_dqn": [
        "agent.hyperparams.learning_starts=64",
        "agent.hyperparams.train_freq=16",
        "agent.hyperparams.gradient_steps=2",
    ],
    "sb3_ppo": [
        "agent.hyperparams.n_steps=16",
        "agent.hyperparams.batch_size=32",
        "agent.hyperparams.n_epochs=2",
    ],
}


def _task(agent: str) -> RLTask:
    return RLTask(compose_config(f"agent={agent}", "eval.episodes=1", *AGENTS[agent]), CPU)


def _optimizer(task: RLTask) -> torch.optim.Optimizer:
    agent = task.agent
    return agent.model.policy.optimizer if task.algo.startswith("sb3") else agent.optimizer


def _optimizer_tensors(task: RLTask) -> list[torch.Tensor]:
    state = _optimizer(task).state_dict()["state"]
    return [v for per_param in state.values() for v in per_param.values() if v.dim() > 0]


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_resume_restores_weights_optimizer_and_counters(tmp_path, agent):
    trained, restored = _task(agent), _task(agent)
    try:
        trained.train_step(400)
        assert trained.agent.updates > 0
        path = tmp_path / "last.pt"
        checkpoint.save_atomic({"task": trained.state_dict(resumable=True)}, path)
        fresh_optimizer = _optimizer_tensors(restored)
        restored.load_state_dict(checkpoint.load(path)["task"])

        assert (restored.step, restored.agent.updates) == (trained.step, trained.agent.updates)
        saved, loaded = _optimizer_tensors(trained), _optimizer_tensors(restored)
        assert saved and len(saved) == len(loaded)
        for a, b in zip(saved, loaded, strict=True):
            torch.testing.assert_close(a, b)
        assert len(fresh_optimizer) < len(saved) or any(
            not torch.equal(a, b) for a, b in zip(fresh_optimizer, saved, strict=True)
        )  # a fresh optimizer differs: the check above would catch a skipped restore
        obs = torch.as_tensor(trained.evaluator.envs.reset(seed=3)[0]).numpy()
        assert (trained.agent.policy()(obs) == restored.agent.policy()(obs)).all()
    finally:
        trained.close()
        restored.close()


def test_dqn_resume_restores_the_replay_buffer_and_exploration_rng(tmp_path):
    trained, restored = _task("dqn"), _task("dqn")
    try:
        trained.train_step(300)
        restored.load_state_dict(trained.state_dict(resumable=True))
        a, b = trained.agent, restored.agent
        assert len(b.buffer) == len(a.buffer) > 0
        batch_a, batch_b = a.buffer.sample(32, CPU.device), b.buffer.sample(32, CPU.device)
        torch.testing.assert_close(batch_a.obs, batch_b.obs)  # same contents, same sampler RNG
        torch.testing.assert_close(batch_a.rewards, batch_b.rewards)
        assert a.rng.random() == b.rng.random()  # ε-greedy draws continue, not restart
    finally:
        trained.close()
        restored.close()


def test_checkpoint_holds_the_replay_buffer_only_when_asked(tmp_path):
    kept, skipped = tmp_path / "kept", tmp_path / "skipped"
    assert lab(kept, *TINY_DQN, "logger=none").returncode == 0
    result = lab(skipped, *TINY_DQN, "logger=none", "checkpoint.replay_buffer=false")
    assert result.returncode == 0, result.stderr
    last = checkpoint.load(kept / "checkpoints" / "last.pt")["task"]
    assert last["buffer"]["size"] > 0
    assert "buffer" not in checkpoint.load(skipped / "checkpoints" / "last.pt")["task"]
    for run in (kept, skipped):  # best.pt is for evaluation and sampling: never the buffer
        assert "buffer" not in checkpoint.load(run / "checkpoints" / "best.pt")["task"]
    # A run resumed without its buffer still continues (it refills), with a warning.
    result = lab(skipped, f"resume={skipped}", "agent.total_steps=2500")
    assert result.returncode == 0, result.stderr
    assert "no replay buffer" in result.stderr + result.stdout
