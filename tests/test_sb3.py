"""SB3 baselines run through the same runner and leave the same summary as lab's agents."""

import importlib.util
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lab.config import CONF_DIR
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
        (["agent=sb3_ppo", "net.layer_norm=true"], ["net.layer_norm=true", "agent=sb3_ppo"]),
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


RECURRENT_TUNED = sorted((CONF_DIR / "tuned").glob("sb3_recurrent_ppo_*.yaml"))
SB3_TUNED = sorted(set((CONF_DIR / "tuned").glob("sb3_*.yaml")) - set(RECURRENT_TUNED))
# rl-zoo3's policy_kwargs for the pairs the lab ships: net_arch=[256, 256] for every DQN entry
# (ReLU, DQN's default activation); none for A2C and PPO: SB3's policy and value nets, 64x64 tanh.
ZOO_NETS = {"dqn": ([256, 256], "ReLU"), "a2c": ([64, 64], "Tanh"), "ppo": ([64, 64], "Tanh")}


def _pair(path: Path) -> tuple[str, str]:
    """``sb3_dqn_cartpole.yaml`` → (sb3_dqn, cartpole)."""
    sb3, algo, env = path.stem.split("_", 2)
    return f"{sb3}_{algo}", env


EXPLORATION = ("exploration_initial_eps", "exploration_final_eps", "exploration_fraction")


def _in_use(agent, key: str):
    """What SB3 uses for ``key`` at ``agent``'s current step, in the config's own terms."""
    model = agent.model
    if key == "train_freq":
        assert model.train_freq.unit.value == "step"
        return model.train_freq.frequency
    if key == "clip_range":
        return model.clip_range(1.0)
    if key == "use_rms_prop":  # A2C's optimizer: RMSprop, or else Adam
        return type(model.policy.optimizer).__name__ == "RMSprop"
    if key == "rms_prop_eps":
        return model.policy.optimizer.defaults["eps"]
    return getattr(model, key)


def _at(agent, step: int, read):
    """``read()`` with SB3's step counter at ``step`` (the run's schedules read it)."""
    saved, agent.model.num_timesteps = agent.model.num_timesteps, step
    try:
        return read()
    finally:
        agent.model.num_timesteps = saved


def _check_settings(task, settings: dict) -> None:
    """The SB3 model ``task`` built uses ``settings`` (an agent config's keys), key by key."""
    agent, model, half = task.agent, task.agent.model, task.total_steps // 2
    if "total_steps" in settings:
        assert task.total_steps == settings["total_steps"]
    if "num_envs" in settings:
        assert model.n_envs == settings["num_envs"]
    if "lr" in settings:
        lr = settings["lr"]
        assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        halfway = lr / 2 if settings.get("lr_schedule") == "linear" else lr
        assert _at(agent, half, lambda: model.lr_schedule(1.0)) == pytest.approx(halfway)
    if "normalize" in settings:
        normalizer = model.get_vec_normalize_env()
        assert (normalizer is not None) == settings["normalize"]
        if normalizer is not None:  # observations and rewards, discounted with the agent's gamma
            assert normalizer.norm_obs and normalizer.norm_reward
            assert normalizer.gamma == model.gamma
    hyperparams = dict(settings.get("hyperparams", {}))
    for key, value in hyperparams.items():
        if key in EXPLORATION:
            continue  # one schedule: checked as a whole below
        if isinstance(value, str) and value.startswith("lin_"):  # linear to 0 over the budget
            start = float(value.removeprefix("lin_"))
            assert _in_use(agent, key) == pytest.approx(start), key
            halfway = _at(agent, half, lambda k=key: _in_use(agent, k))
            assert halfway == pytest.approx(start / 2), key
        elif value is None:
            assert _in_use(agent, key) is None, key
        else:
            assert _in_use(agent, key) == pytest.approx(value), key
    if set(EXPLORATION) & set(hyperparams):  # ε: linear from initial to final over a fraction
        eps = model.exploration_schedule
        start, final, fraction = (hyperparams.get(k, getattr(model, k)) for k in EXPLORATION)
        end = int(fraction * task.total_steps)
        assert _at(agent, 0, lambda: eps(1.0)) == pytest.approx(start)
        midway = _at(agent, end // 2, lambda: eps(1.0))
        assert midway == pytest.approx((start + final) / 2, abs=1e-3)
        assert _at(agent, end, lambda: eps(1.0)) == pytest.approx(final)


def _check_net(model, algo: str) -> None:
    import torch

    widths, activation = ZOO_NETS[algo]
    if algo == "dqn":
        nets = [model.q_net]
        assert _linear_widths(model.q_net)[:-1] == widths
    else:
        extractor = model.policy.mlp_extractor
        nets = [extractor.policy_net, extractor.value_net]
        assert [_linear_widths(net) for net in nets] == [widths, widths]
    for net in nets:
        kinds = {type(m).__name__ for m in net.modules() if not isinstance(m, torch.nn.Linear)}
        assert activation in kinds and not kinds & ({"ReLU", "Tanh"} - {activation}), kinds


def test_every_sb3_tuned_file_names_its_source():
    assert len(SB3_TUNED) == 12  # 4 vector envs x 3 algorithms; Atari and Catch: see README
    for path in SB3_TUNED:
        header = path.read_text().splitlines()[1]
        algo = _pair(path)[0].removeprefix("sb3_")
        assert header.startswith(f"# rl-zoo3 hyperparams/{algo}.yml, "), path.name
        assert ", commit 22e3ff2450fd92033f7f032915e1f64894a09584" in header, path.name


@pytest.mark.parametrize("path", SB3_TUNED, ids=[p.stem for p in SB3_TUNED])
def test_sb3_agents_use_the_zoo_settings_they_claim(path):
    agent, env = _pair(path)
    if env == "lunarlander" and importlib.util.find_spec("Box2D") is None:
        pytest.skip("Box2D is not installed (pip install -e '.[box2d]')")
    zoo = OmegaConf.to_container(OmegaConf.load(path).agent)
    task = _sb3_task(f"agent={agent}", f"env={env}")
    try:
        _check_settings(task, zoo)
        _check_net(task.agent.model, agent.removeprefix("sb3_"))
    finally:
        task.close()


@pytest.mark.parametrize("agent", ["sb3_dqn", "sb3_a2c", "sb3_ppo"])
def test_sb3_agents_use_sb3s_own_defaults_where_the_zoo_has_no_settings(agent):
    from lab.rl.sb3 import _algorithms

    shipped = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "agent" / f"{agent}.yaml"))
    algorithm = _algorithms()[shipped["algo"]]
    sb3 = {k: p.default for k, p in inspect.signature(algorithm).parameters.items()}
    assert shipped["lr"] == sb3["learning_rate"] and shipped["lr_schedule"] == "constant"
    assert not shipped["normalize"] and not shipped["policy_kwargs"]
    for key, value in shipped["hyperparams"].items():
        assert value == sb3[key], key
    assert not (CONF_DIR / "tuned" / f"{agent}_catch.yaml").exists()
    task = _sb3_task(f"agent={agent}", "env=catch")  # Catch: no zoo entry
    try:
        _check_settings(task, shipped)
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


def _learn(run, agent: str, steps: int, *overrides: str) -> dict:
    result = lab(
        run,
        f"agent={agent}",
        f"agent.total_steps={steps}",
        "logger=none",
        "seed=0",
        "stop_on_threshold=true",
        *overrides,
    )
    assert result.returncode == 0, result.stderr
    return read_summary(run)


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(LEARNS))
def test_sb3_agents_learn_cartpole(tmp_path, agent):
    summary = _learn(tmp_path / "run", agent, LEARNS[agent], "eval.interval=5000")
    assert summary["status"] == "solved", summary
    assert summary["best"]["eval/return_mean"] >= 475


@pytest.mark.slow
def test_recurrent_ppo_learns_cartpole(tmp_path):
    """The zoo's CartPoleNoVel settings on full-state CartPole with a small LSTM and 5 epochs,
    20 rollouts (~60 s under load; RecurrentPPO is slow on CPU): seed 0 scores 50, a policy
    that has not learned about 10."""
    summary = _learn(
        tmp_path / "run",
        "sb3_recurrent_ppo",
        5120,
        "tuned=sb3_recurrent_ppo_cartpole_novel",
        "agent.policy_kwargs.lstm_hidden_size=32",
        "agent.hyperparams.n_epochs=5",
        "eval.interval=5120",
    )
    assert summary["metrics"]["eval/return_mean"] >= 40, summary


def test_every_recurrent_ppo_tuned_file_names_its_source_and_is_used():
    """rl-zoo3's ppo_lstm.yml tunes CartPoleNoVel-v1 and Acrobot-v1 among the envs lab has."""
    assert [p.stem for p in RECURRENT_TUNED] == [
        "sb3_recurrent_ppo_acrobot",
        "sb3_recurrent_ppo_cartpole_novel",
    ]
    for path in RECURRENT_TUNED:
        header = path.read_text().splitlines()[1]
        assert header.startswith("# rl-zoo3 hyperparams/ppo_lstm.yml, "), path.name
        assert ", commit 038ab1617a486b7d918be8056697bf34caeefbcd" in header, path.name
        env = path.stem.removeprefix("sb3_recurrent_ppo_")
        task = _sb3_task("agent=sb3_recurrent_ppo", f"env={env}")
        try:
            _check_settings(task, OmegaConf.to_container(OmegaConf.load(path).agent))
            policy = task.agent.model.policy
            assert type(policy).__name__ == "RecurrentActorCriticPolicy"
            assert policy.lstm_actor.hidden_size == 256 and policy.lstm_critic is not None
            assert _linear_widths(policy.mlp_extractor.policy_net) == [64, 64]
        finally:
            task.close()


def test_recurrent_ppo_refuses_a_lab_memory_net_and_says_what_sizes_its_lstm():
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"net=lstm.*agent.policy_kwargs.lstm_hidden_size"):
        _sb3_task("agent=sb3_recurrent_ppo", "env=cartpole_novel", "net=lstm")


def test_recurrent_ppo_evaluation_carries_the_lstm_state_from_step_to_step():
    import numpy as np

    task = _sb3_task("agent=sb3_recurrent_ppo", "env=cartpole_novel", "agent.num_envs=2")
    try:
        calls = []
        predict = task.agent.model.predict

        def spy(obs, state=None, episode_start=None, deterministic=False):
            actions, new_state = predict(obs, state, episode_start, deterministic)
            calls.append((state, episode_start.copy(), new_state))
            return actions, new_state

        task.agent.model.predict = spy
        act = task.agent.policy()
        obs = np.zeros((3, 2), dtype=np.float32)
        act(obs), act(obs)
        (first_in, first_start, first_out), (second_in, second_start, _) = calls
        assert first_in is None and first_start.all()  # a fresh policy starts from zeros...
        assert second_in is first_out and not second_start.any()  # ...then carries its state
    finally:
        task.close()
