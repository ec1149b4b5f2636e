"""Every option of every config group composes, and builds the objects it names."""

import importlib.util

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class

from lab.compute import Compute
from lab.config import CONF_DIR, instantiate
from lab.errors import ConfigError
from lab.loggers import Logger
from lab.rl.env import make_env
from lab.rl.task import RLTask
from tests.conftest import compose_config

CPU = Compute(torch.device("cpu"))
HAS_ALE = importlib.util.find_spec("ale_py") is not None
HAS_BOX2D = importlib.util.find_spec("Box2D") is not None


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


GROUPS = ("agent", "env", "net", "logger", "experiment", "model", "dataset", "hparams_search")


def test_every_group_has_options():
    for group in (*GROUPS, "hydra/launcher"):
        assert options(group), group


def compose_with_hydra(*overrides: str):
    """The composed config with its ``hydra`` node (launcher, sweeper), as a run would see it."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def _tiny_task(cfg):
    cfg.agent.total_steps = 64
    cfg.eval.episodes = 1
    return RLTask(cfg, CPU)


def _tensors(state) -> list[torch.Tensor]:
    """Every floating-point tensor in a (nested) state dict."""
    if isinstance(state, torch.Tensor):
        return [state] if state.is_floating_point() else []
    if isinstance(state, dict):
        return [t for value in state.values() for t in _tensors(value)]
    return []


# Shrunk so that 64 env steps include updates (the shipped settings wait longer to learn).
LEARN_SOON = {
    "dqn": ["agent.learning_starts=32", "agent.batch_size=16"],
    "a3c": ["agent.workers=1"],
    "impala": ["agent.actors=1", "agent.envs_per_actor=2", "agent.unroll=4"],
    "sb3_dqn": [
        "agent.hyperparams.learning_starts=16",
        "agent.hyperparams.batch_size=16",
        "agent.hyperparams.train_freq=8",
        "agent.hyperparams.gradient_steps=1",
    ],
    "sb3_ppo": ["agent.hyperparams.n_steps=4", "agent.hyperparams.batch_size=16"],
    "sb3_recurrent_ppo": ["agent.hyperparams.n_steps=4", "agent.hyperparams.batch_size=16"],
}


@pytest.mark.parametrize("agent", options("agent"))
def test_agent_options_build_and_learn_a_step(agent):
    cfg = compose_config(f"agent={agent}", "env=cartpole", *LEARN_SOON.get(agent, []))
    task = _tiny_task(cfg)
    try:
        assert task.algo == cfg.agent.name
        before = [t.clone() for t in _tensors(task.state_dict(resumable=False))]
        metrics = task.train_step(32)
        metrics |= task.train_step(32)
        assert task.step >= 60  # about 64 (autoreset steps are not transitions; SB3 rounds up)
        assert task.agent.updates > 0 and metrics["counter/updates"] == task.agent.updates
        after = _tensors(task.state_dict(resumable=False))
        # Weights come first in every agent's state; optimizers add their state at the first step.
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=False))
        # Schedules stay in their range (they reach 0 only at the end of the 64-step budget).
        for key, value in metrics.items():
            if key in ("train/lr", "train/learning_rate"):
                assert 0 <= value <= cfg.agent.lr, (key, value)
            if key in ("train/clip_range", "train/epsilon"):
                assert 0 <= value <= 1, (key, value)
        action = task.agent.policy()(task.evaluator.envs.reset(seed=0)[0])
        assert action.shape == (1,)
    finally:
        task.close()


@pytest.mark.parametrize("env", options("env"))
def test_env_options_build(env):
    if env in ("pong", "breakout") and not HAS_ALE:
        pytest.skip("ale-py is not installed (pip install -e '.[atari]')")
    if env == "lunarlander" and not HAS_BOX2D:
        pytest.skip("Box2D is not installed (pip install -e '.[box2d]')")
    cfg = compose_config(f"env={env}")
    environment = make_env(cfg.env)
    try:
        obs, _ = environment.reset(seed=0)
        assert environment.observation_space.contains(obs)
        if cfg.env.get("atari"):
            assert obs.shape == (4, 84, 84)
            assert cfg.net._target_ == "lab.nets.NatureCNN"  # image envs pick the CNN torso
    finally:
        environment.close()


NET_CASES = {  # each net option with an agent and env it is built for
    "mlp": ("dqn", "acrobot"),
    "mlp_256": ("dqn", "cartpole"),
    "mlp_tanh": ("a2c", "cartpole"),
    "lstm": ("a2c", "cartpole"),
    "gru": ("a2c", "cartpole"),
    "transformer": ("a2c", "cartpole"),
    "nature_cnn": ("dqn", "catch"),
    "impala_resnet": ("dqn", "catch"),
}


def test_every_net_option_has_a_case():
    assert sorted(NET_CASES) == options("net")


@pytest.mark.parametrize("net", sorted(NET_CASES))
def test_net_options_build_for_their_observations(net):
    agent, env = NET_CASES[net]
    cfg = compose_config(f"agent={agent}", f"net={net}", f"env={env}")
    task = _tiny_task(cfg)
    try:
        obs = torch.as_tensor(task.evaluator.envs.reset(seed=0)[0])
        model = task.agent.q if agent == "dqn" else task.agent.model
        torso = model.torso
        assert type(torso) is get_class(cfg.net._target_)
        assert torso.recurrent == (net in ("lstm", "gru", "transformer"))
        if hasattr(cfg.net, "hidden_sizes"):  # the config's layer widths are the ones built
            widths = [m.out_features for m in torso.body if isinstance(m, torch.nn.Linear)]
            assert widths == list(cfg.net.hidden_sizes)
        if agent == "dqn":
            assert model(obs).shape == (1, task.agent.n_actions)
        else:
            logits, _ = model.policy_logits(obs, model.initial_state(1))
            assert logits.shape == (1, 2)
    finally:
        task.close()


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options_build(tmp_path, logger):
    extra = ["logger.wandb.mode=disabled"] if logger == "wandb" else []
    cfg = compose_config(f"logger={logger}", *extra)
    sink = Logger(cfg, tmp_path, {}, None)
    sink.log({"train/loss": 1.0}, step=1, elapsed=0.5)
    sink.close()
    assert (tmp_path / "metrics.jsonl").read_text().startswith('{"step": 1')


EXPERIMENTS = {  # what each preset must set: (env id, net, agent keys, sweep params)
    "bench_a3c": ("CartPole-v1", "MLP", {}, {"agent": "a3c,sb3_a2c", "seed": "0,1,2,3,4"}),
    "bench_cartpole": ("CartPole-v1", "MLP", {}, {"agent": "dqn,sb3_dqn", "seed": "0,1,2,3,4"}),
    "bench_impala": (
        "CartPole-v1",
        "MLP",
        {"name": "impala", "batch_size": 2},  # one trajectory per actor (2 by default)
        {"agent.actors": "1,2,4,8,16", "seed": "0,1,2"},
    ),
    "bench_dqn": (
        "CartPole-v1",
        "MLP",
        {},
        {"agent": "dqn", "env": "cartpole,acrobot,mountaincar,lunarlander,catch", "seed": "0,1,2"},
    ),
    "bench_actor_critic": (
        "CartPole-v1",
        "MLP",
        {},
        {"agent": "a2c,a3c", "env": "cartpole,acrobot,lunarlander", "seed": "0,1,2"},
    ),
    # The sweeper picks model= per job (which switches agent, env and net off); composed alone
    # it is the default RL config.
    "bench_gan": (
        "CartPole-v1",
        "MLP",
        {},
        {"model": "dcgan,wgan_gp,stylegan,rbm", "seed": "0,1,2"},
    ),
}
TIME_TO_SOLVE = ("bench_cartpole", "bench_a3c")  # stop once solved; the others run their budget


def test_every_experiment_has_a_case():
    assert sorted(EXPERIMENTS) == options("experiment")


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_options_compose_and_build(experiment):
    env_id, net, agent_keys, sweep = EXPERIMENTS[experiment]
    cfg = compose_with_hydra(f"experiment={experiment}")
    assert cfg.env.id == env_id and cfg.net._target_ == f"lab.nets.{net}"
    for key, value in agent_keys.items():
        assert cfg.agent[key] == value, key
    assert dict(cfg.hydra.sweeper.params or {}) == sweep
    if sweep:  # the benchmarks: timing runs without W&B; time-to-solve ones stop when solved
        assert cfg.hydra.mode.name == "MULTIRUN" and not cfg.logger
        assert cfg.stop_on_threshold == (experiment in TIME_TO_SOLVE)
    del cfg.hydra
    _tiny_task(cfg).close()


@pytest.mark.parametrize("search", options("hparams_search"))
def test_hparams_search_options_switch_to_optuna(search):
    cfg = compose_with_hydra(f"hparams_search={search}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.storage is None and sweeper.n_trials > 0 and sweeper.params
    assert cfg.hydra.mode.name == "MULTIRUN"
    direction = "minimize" if cfg.optimized_metric == "eval/fid" else "maximize"
    assert sweeper.direction == direction
    family = cfg.model if cfg.get("model") is not None else cfg.agent
    for key in sweeper.params:  # every searched key exists in the composed config
        group, _, name = key.partition(".")
        assert group in ("agent", "model") and name in family, key


@pytest.mark.parametrize("launcher", options("hydra/launcher"))
def test_launcher_options_compose_to_their_plugin(launcher):
    cfg = compose_with_hydra(f"hydra/launcher={launcher}")
    target = cfg.hydra.launcher._target_
    plugin = {"joblib": "Joblib", "ray": "Ray", "slurm": "Slurm", "local": "Local"}[launcher]
    assert target.endswith(f"{plugin}Launcher"), target
    get_class(target)  # the plugin is installed and importable


@pytest.mark.parametrize("launcher", options("hydra/launcher"))
def test_parallel_launchers_give_each_job_its_share_of_the_cores(launcher):
    import os

    from lab.sweep import threads_per_job

    cores = len(os.sched_getaffinity(0))
    extra = {"joblib": ["hydra.launcher.n_jobs=2"], "slurm": ["hydra.launcher.cpus_per_task=3"]}
    cfg = compose_with_hydra(f"hydra/launcher={launcher}", *extra.get(launcher, []))
    expected = {"joblib": max(1, cores // 2), "ray": 1, "slurm": 3, "local": 1}[launcher]
    assert threads_per_job(cfg.hydra.launcher) == expected
    cfg = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=-1")
    assert threads_per_job(cfg.hydra.launcher) == 1  # a job per core: one thread each
    assert threads_per_job(compose_with_hydra().hydra.launcher) is None  # one job at a time


@pytest.mark.parametrize("model", options("model"))
def test_model_options_compose_and_build(model):
    from lab.gen.task import GenTask

    small = "model.layers=[8]" if model == "rbm" else "model.width=8"  # an RBM has no convs
    cfg = compose_config(f"model={model}", small, "fid.samples=50", "fid.kid_subset_size=20")
    assert cfg.get("agent") is None and cfg.get("env") is None and cfg.get("net") is None
    assert cfg.dataset.name == "digits"
    task = GenTask(cfg, CPU)
    try:
        assert task.algo == model and type(task.model) is get_class(cfg.model._target_)
        task.train_step(1)
        assert task.step == 1
    finally:
        task.close()


@pytest.mark.parametrize("dataset", options("dataset"))
def test_dataset_options_compose_and_load_or_name_the_missing_path(tmp_path, dataset):
    root = [] if dataset == "digits" else [f"dataset.root={tmp_path}"]
    cfg = compose_config("model=dcgan", f"dataset={dataset}", *root)
    assert cfg.dataset.name == dataset
    if dataset == "digits":
        data = instantiate(cfg.dataset)
        assert data.shape == (1, 16, 16) and data.num_classes == 10
        return
    with pytest.raises(ConfigError) as error:  # nothing downloads: a clear error instead
        instantiate(cfg.dataset)
    assert str(tmp_path) in str(error.value)


def test_dueling_head_is_value_plus_centred_advantages():
    cfg = compose_config("agent.dueling=true")
    task = _tiny_task(cfg)
    try:
        q = task.agent.q
        obs = torch.randn(5, 4)
        out = q.head(q.torso(obs))  # the head's raw outputs: [V, A_1, ..., A_n]
        value, advantage = out[:, :1], out[:, 1:]
        expected = value + advantage - advantage.mean(dim=1, keepdim=True)
        torch.testing.assert_close(q(obs), expected)
        assert q.head.out_features == task.agent.n_actions + 1
    finally:
        task.close()


def test_polyak_target_updates_move_the_target_by_tau():
    cfg = compose_config(
        "agent.target_tau=0.01",
        "agent.n_step=1",
        "agent.learning_starts=16",
        "agent.batch_size=16",
    )
    task = _tiny_task(cfg)
    agent = task.agent
    try:
        task.train_step(64)
        assert agent.updates > 0
        target = [p.clone() for p in agent.q_target.parameters()]
        agent.update()
        for old, new, online in zip(
            target, agent.q_target.parameters(), agent.q.parameters(), strict=True
        ):
            torch.testing.assert_close(new, old + 0.01 * (online - old))
    finally:
        task.close()


@pytest.mark.parametrize(
    "overrides, hidden, activation",
    [
        (["agent=a3c"], [64, 64], "tanh"),  # actor-critics: SB3's policy MLP
        (["agent=a2c"], [64, 64], "tanh"),
        (["agent=dqn"], [128, 128], "relu"),
        (["agent=a3c", "net=mlp"], [128, 128], "relu"),  # the command line wins
    ],
)
def test_each_agent_picks_its_default_mlp(overrides, hidden, activation):
    cfg = compose_config(*overrides)
    assert list(cfg.net.hidden_sizes) == hidden and cfg.net.activation == activation


def test_image_envs_pick_the_cnn_over_the_agents_mlp():
    for order in (["agent=a3c", "env=catch"], ["env=catch", "agent=a3c"]):
        assert compose_config(*order).net._target_ == "lab.nets.NatureCNN"
