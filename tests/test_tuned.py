"""Tuned settings per (agent, env): ``conf/tuned/<agent>_<env>.yaml``, merged only for its pair."""

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lab.config import CONF_DIR
from tests.conftest import TINY_DQN, compose_config, lab, read_summary

TUNED = sorted((CONF_DIR / "tuned").glob("*.yaml"))
AGENTS = sorted(p.stem for p in (CONF_DIR / "agent").glob("*.yaml"))
ENVS = sorted(p.stem for p in (CONF_DIR / "env").glob("*.yaml"))


def pair(path) -> tuple[str, str]:
    """``dqn_cartpole`` → (dqn, cartpole); the agent name may itself hold ``_`` (sb3_dqn)."""
    for agent in sorted(AGENTS, key=len, reverse=True):
        env = path.stem.removeprefix(f"{agent}_")
        if path.stem.startswith(f"{agent}_") and env in ENVS:
            return agent, env
    raise AssertionError(f"{path.name}: not <agent>_<env> for any conf/agent and conf/env")


def leaves(node, prefix: str = "") -> dict:
    """The file's settings as dotted keys (its defaults list aside)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        if key != "defaults":
            out |= leaves(value, f"{prefix}.{key}" if prefix else key)
    return out


def raw(cfg, key: str):
    """A key's value as the config holds it, before interpolations are resolved."""
    node = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        node = node[part]
    return node


def settings(path) -> dict:
    return leaves(yaml.safe_load(path.read_text()))


def test_there_are_tuned_settings_for_the_pairs_the_lab_promises():
    promised = [f"dqn_{e}" for e in ("cartpole", "acrobot", "mountaincar", "lunarlander", "catch")]
    promised += [f"{a}_{e}" for a in ("a2c", "a3c") for e in ("cartpole", "acrobot", "lunarlander")]
    missing = sorted(set(promised) - {p.stem for p in TUNED})
    assert not missing, f"no conf/tuned file for {missing}"


@pytest.mark.parametrize("path", TUNED, ids=[p.stem for p in TUNED])
def test_tuned_file_is_merged_for_its_pair_and_only_for_it(path):
    agent, env = pair(path)
    wanted = settings(path)
    cfg = compose_config(f"agent={agent}", f"env={env}")
    for key, value in wanted.items():  # as written: an interpolation stays one
        assert raw(cfg, key) == value, f"{path.name}: {key}"
    # The same pair with tuned=none runs the agent's defaults, which differ in at least one
    # of these keys: a tuned file that only repeats the defaults tunes nothing.
    plain = compose_config(f"agent={agent}", f"env={env}", "tuned=none")
    ours = [(OmegaConf.select(cfg, k), OmegaConf.select(plain, k)) for k in wanted]
    assert any(tuned != default for tuned, default in ours), path.name
    # An env without a tuned file for this agent gets none of it.
    for other in ENVS:
        if other != env and not (CONF_DIR / f"tuned/{agent}_{other}.yaml").exists():
            cfg = compose_config(f"agent={agent}", f"env={other}")
            assert cfg.agent == compose_config(f"agent={agent}", f"env={other}", "tuned=none").agent
            break


def test_command_line_overrides_win_over_tuned_settings():
    cfg = compose_config("agent=dqn", "env=cartpole", "agent.lr=0.123")
    assert cfg.agent.lr == 0.123


def test_a_tuned_files_mlp_keys_reach_an_mlp_and_no_other_torso():
    """``tuned_mlp`` shapes the MLP a pair's tuned file was chosen with; a user who picks
    another torso (net=transformer) gets that torso, built, with the file's other settings."""
    from lab.compute import Compute
    from lab.rl.task import build_agent

    assert compose_config("agent=dqn", "env=cartpole").net.layer_norm is True
    assert (
        compose_config("agent=dqn", "env=cartpole", "net.layer_norm=false").net.layer_norm is False
    )
    assert compose_config("agent=dqn", "env=cartpole", "tuned=none").net.layer_norm is False
    assert list(compose_config("agent=dqn", "env=acrobot").net.hidden_sizes) == [256, 256]
    assert list(compose_config("agent=dqn", "env=catch", "net=mlp").net.hidden_sizes) == [128, 128]
    for env in ("cartpole", "acrobot"):
        cfg = compose_config("agent=dqn", f"env={env}", "net=transformer", "net.width=8")
        assert "layer_norm" not in cfg.net and "hidden_sizes" not in cfg.net
        assert cfg.agent.n_step == compose_config("agent=dqn", f"env={env}").agent.n_step
        build_agent(cfg, Compute(torch.device("cpu"))).close()


def test_a_run_says_which_settings_it_took(tmp_path):
    tuned = lab(tmp_path / "tuned", "agent=dqn", "env=cartpole", *TINY_DQN)
    assert tuned.returncode == 0, tuned.stderr
    assert "settings: conf/tuned/dqn_cartpole.yaml" in tuned.stdout + tuned.stderr
    assert read_summary(tmp_path / "tuned")["settings"] == "conf/tuned/dqn_cartpole.yaml"

    short = ("agent.total_steps=500", "eval.interval=500", "eval.episodes=1")
    plain = lab(tmp_path / "plain", "agent=a2c", "env=mountaincar", *short)
    assert plain.returncode == 0, plain.stderr
    said = "agent=a2c defaults (no conf/tuned/a2c_mountaincar.yaml)"
    assert said in plain.stdout + plain.stderr
    assert read_summary(tmp_path / "plain")["settings"] == said


def test_a2c_tmaze_rollouts_hold_one_whole_episode_whatever_the_length():
    """length + 1 steps and the autoreset step: rollouts stay in phase with the episodes."""
    for length in (5, 20, 30):
        cfg = compose_config("agent=a2c", "env=tmaze", f"env.length={length}")
        assert cfg.agent.t_max == length + 2
