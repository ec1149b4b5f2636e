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


def _sb3_task(*overrides: str):
    import torch

    from lab.compute import Compute
    from lab.rl.task import RLTask
    from tests.conftest import compose_config

    cfg = compose_config(*overrides, "eval.episodes=1")
    return RLTask(cfg, Compute(torch.device("cpu")))


def _linear_widths(module) -> list[int]:
    import torch

    return [m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_sb3_builds_the_net_the_net_group_names():
    import torch

    task = _sb3_task("agent=sb3_dqn", "net.hidden_sizes=[32,16]", "net.activation=elu")
    try:  # the zoo's default is [256, 256] ReLU: the override must reach SB3's Q-network
        q_net = task.agent.model.q_net
        assert _linear_widths(q_net) == [32, 16, 2]
        assert any(isinstance(m, torch.nn.ELU) for m in q_net.modules())
    finally:
        task.close()
    task = _sb3_task("agent=sb3_ppo", "net=mlp")
    try:  # net=mlp is 128x128 ReLU, for the policy and the value net alike
        extractor = task.agent.model.policy.mlp_extractor
        assert _linear_widths(extractor.policy_net) == [128, 128]
        assert _linear_widths(extractor.value_net) == [128, 128]
        assert any(isinstance(m, torch.nn.ReLU) for m in extractor.modules())
        assert not any(isinstance(m, torch.nn.Tanh) for m in extractor.modules())
    finally:
        task.close()
    task = _sb3_task("agent=sb3_a2c")
    try:  # the shipped default: SB3's own 64x64 tanh
        extractor = task.agent.model.policy.mlp_extractor
        assert _linear_widths(extractor.policy_net) == [64, 64]
        assert any(isinstance(m, torch.nn.Tanh) for m in extractor.modules())
    finally:
        task.close()


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["agent=sb3_a2c", "net=lstm"], ["agent=sb3_a2c", "net=lstm", "net=mlp"]),
        (["agent=sb3_dqn", "+agent.policy_kwargs.net_arch=[8]"], ["net_arch", "net.hidden_sizes"]),
    ],
)
def test_sb3_refuses_a_net_it_cannot_build(overrides, needles):
    from lab.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        _sb3_task(*overrides)
    for needle in needles:
        assert needle in str(error.value)


def test_sb3_learns_from_clipped_rewards_and_logs_the_game_score():
    import numpy as np

    task = _sb3_task("agent=sb3_a2c", "+env.train_reward_clip=0.25")
    try:
        metrics = task.train_step(400)
        rewards = task.agent.model.rollout_buffer.rewards
        assert np.all(rewards == 0.25)  # CartPole pays 1 a step; the learner sees it clipped
        returns, lengths = metrics["rollout/episode_return"], metrics["rollout/episode_length"]
        assert returns and returns == lengths  # the logged return is the game's: 1 a step
    finally:
        task.close()


# rl-zoo3's tuned CartPole-v1 settings (hyperparams/<algo>.yml), as SB3 must end up using them.
ZOO = {
    "sb3_dqn": {
        "n_envs": 1,
        "learning_rate": 2.3e-3,
        "batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "gamma": 0.99,
        "target_update_interval": 10,
        "train_freq": 256,
        "gradient_steps": 128,
        "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04,
        "net_arch": [256, 256],
    },
    "sb3_a2c": {"n_envs": 8, "learning_rate": 7e-4, "ent_coef": 0.0, "n_steps": 5, "gamma": 0.99},
    "sb3_ppo": {
        "n_envs": 8,
        "learning_rate": 1e-3,  # lin_1e-3: this at the start, half of it halfway, 0 at the end
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "clip_range": 0.2,  # lin_0.2
    },
}


@pytest.mark.parametrize("agent", sorted(ZOO))
def test_sb3_agents_use_the_zoo_settings_they_claim(agent):
    task = _sb3_task(f"agent={agent}")
    model = task.agent.model
    try:
        for key, value in ZOO[agent].items():
            if key == "net_arch":
                assert _linear_widths(model.q_net)[:-1] == value
            elif key == "train_freq":
                assert (model.train_freq.frequency, model.train_freq.unit.value) == (value, "step")
            elif key == "learning_rate":
                assert model.lr_schedule(1.0) == pytest.approx(value)
            elif key == "clip_range":
                assert model.clip_range(1.0) == pytest.approx(value)
            elif key == "n_envs":
                assert model.n_envs == value
            else:
                assert getattr(model, key) == pytest.approx(value), key
        if agent == "sb3_ppo":  # the linear schedules run over the whole budget, not a chunk
            model.num_timesteps = task.total_steps // 2
            assert model.lr_schedule(1.0) == pytest.approx(5e-4)
            assert model.clip_range(1.0) == pytest.approx(0.1)
    finally:
        task.close()


def test_sb3_normalize_trains_on_normalised_envs_and_evaluates_on_the_game(tmp_path):
    import numpy as np

    task = _sb3_task("agent=sb3_a2c", "env=acrobot", "agent.num_envs=2", "agent.normalize=true")
    try:
        task.train_step(400)
        normalizer = task.agent.model.get_vec_normalize_env()
        rewards = task.agent.model.rollout_buffer.rewards
        assert not np.isin(rewards, [-1.0, 0.0]).all()  # Acrobot pays -1 a step; SB3 sees less
        count = normalizer.obs_rms.count
        seen = []
        predict = task.agent.model.predict
        task.agent.model.predict = lambda obs, **kw: (seen.append(obs), predict(obs, **kw))[1]
        metrics, _ = task.evaluate(tmp_path)
        # The policy sees observations normalised with the training statistics, frozen...
        raw = task.evaluator.envs.reset(seed=task.evaluator.seed)[0]
        np.testing.assert_allclose(seen[0], normalizer.normalize_obs(raw))
        assert normalizer.obs_rms.count == count
        # ...and the return is the game's: -1 a step, 0 for the step that reaches the goal.
        length = metrics["eval/length_mean"]
        assert -length <= metrics["eval/return_mean"] <= -length + 1
    finally:
        task.close()


def test_sb3_checkpoint_carries_the_normalisation_statistics(tmp_path):
    import numpy as np

    from lab import checkpoint

    overrides = ("agent=sb3_ppo", "env=acrobot", "agent.normalize=true", "agent.num_envs=2")
    overrides += ("agent.hyperparams.n_steps=64", "agent.hyperparams.batch_size=64")
    trained, restored = _sb3_task(*overrides), _sb3_task(*overrides)
    try:
        trained.train_step(300)
        path = tmp_path / "best.pt"
        checkpoint.save_atomic({"task": trained.state_dict(resumable=False)}, path)
        restored.load_state_dict(checkpoint.load(path)["task"])  # weights_only=True
        for name in ("obs_rms", "ret_rms"):
            saved = getattr(trained.agent.model.get_vec_normalize_env(), name)
            loaded = getattr(restored.agent.model.get_vec_normalize_env(), name)
            assert loaded.count == saved.count > 1
            np.testing.assert_array_equal(loaded.mean, saved.mean)
            np.testing.assert_array_equal(loaded.var, saved.var)
        seen = []
        predict = restored.agent.model.predict
        restored.agent.model.predict = lambda obs, **kw: (seen.append(obs), predict(obs, **kw))[1]
        raw = restored.evaluator.envs.reset(seed=0)[0]
        restored.agent.policy()(raw)  # evaluation of best.pt: the trained run's statistics
        trained_normalizer = trained.agent.model.get_vec_normalize_env()
        np.testing.assert_allclose(seen[0], trained_normalizer.normalize_obs(raw))
    finally:
        trained.close()
        restored.close()


LEARNS = {  # agent: (env steps the shipped settings need on seed 0, measured, with margin)
    "sb3_a2c": 60_000,
    "sb3_ppo": 60_000,
    "sb3_dqn": 50_000,
}


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(LEARNS))
def test_sb3_agents_learn_cartpole(tmp_path, agent):
    run = tmp_path / "run"
    result = lab(
        run,
        f"agent={agent}",
        f"agent.total_steps={LEARNS[agent]}",
        "logger=none",
        "seed=0",
        "stop_on_threshold=true",
        "eval.interval=5000",
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "solved", summary
    assert summary["best"]["eval/return_mean"] >= 475
