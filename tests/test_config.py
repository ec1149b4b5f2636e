"""Every option of every config group composes, and builds the objects it names."""

import importlib.util

import pytest
import torch

from lab.compute import Compute
from lab.loggers import Logger
from lab.rl.env import make_env
from lab.rl.task import RLTask
from tests.conftest import CONF_DIR, compose_config

CPU = Compute(torch.device("cpu"))
HAS_ALE = importlib.util.find_spec("ale_py") is not None
HAS_BOX2D = importlib.util.find_spec("Box2D") is not None


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in ("agent", "env", "net", "logger", "experiment"):
        assert options(group), group


def _tiny_task(cfg):
    cfg.agent.total_steps = 64
    cfg.eval.episodes = 1
    return RLTask(cfg, CPU)


@pytest.mark.parametrize("agent", options("agent"))
def test_agent_options_build_and_learn_a_step(agent):
    cfg = compose_config(f"agent={agent}", "env=cartpole")
    task = _tiny_task(cfg)
    try:
        assert task.algo == cfg.agent.name
        metrics = task.train_step(32)
        assert task.step >= 28  # about 32 (autoreset steps are not transitions; SB3 rounds up)
        assert isinstance(metrics, dict)
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


@pytest.mark.parametrize(
    "net, env", [("mlp", "cartpole"), ("mlp", "acrobot"), ("nature_cnn", "catch")]
)
def test_net_options_build_for_their_observations(net, env):
    cfg = compose_config(f"net={net}", f"env={env}")
    task = _tiny_task(cfg)
    try:
        obs = torch.as_tensor(task.evaluator.envs.reset(seed=0)[0])
        assert task.agent.q(obs).shape == (1, task.agent.n_actions)
    finally:
        task.close()


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options_build(tmp_path, logger):
    extra = ["logger.mode=disabled"] if logger == "wandb" else []
    cfg = compose_config(f"logger={logger}", *extra)
    sink = Logger(cfg, tmp_path, {}, None)
    sink.log({"train/loss": 1.0}, step=1, elapsed=0.5)
    sink.close()
    assert (tmp_path / "metrics.jsonl").read_text().startswith('{"step": 1')


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_options_compose_and_build(experiment):
    if "atari" in experiment and not HAS_ALE:
        pytest.skip("ale-py is not installed (pip install -e '.[atari]')")
    cfg = compose_config(f"experiment={experiment}")
    task = _tiny_task(cfg)
    task.close()


def test_dueling_and_polyak_options_build():
    cfg = compose_config(
        "agent.dueling=true",
        "agent.target_tau=0.01",
        "agent.n_step=1",
        "agent.learning_starts=16",
        "agent.batch_size=16",
    )
    task = _tiny_task(cfg)
    try:
        before = [p.clone() for p in task.agent.q_target.parameters()]
        task.train_step(64)
        assert task.agent.updates > 0
        after = list(task.agent.q_target.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
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
