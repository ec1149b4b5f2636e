"""The memory and residual torsos: what a step may see (causality, context, episodes), the
GTrXL gate's start near the identity, IMPALA's stages, and which agents take which torso."""

import pytest
import torch
from gymnasium import spaces
from omegaconf import OmegaConf

from lab.compute import Compute, seed_everything
from lab.config import instantiate
from lab.errors import ConfigError
from lab.nets import mask_state
from lab.nets_attention import GRUGate, Transformer
from lab.nets_recurrent import GRU, LSTM
from lab.nets_resnet import ImpalaResNet, ResidualBlock
from lab.rl.sb3 import sb3_policy
from lab.rl.task import RLTask, build_agent
from tests.conftest import assert_one_line_error, compose_config, lab

CPU = Compute(torch.device("cpu"))
TORSOS = {
    "lstm": lambda: LSTM((3,), hidden_size=8, encoder_sizes=(8,)),
    "gru": lambda: GRU((3,), hidden_size=8, encoder_sizes=(8,)),
    "transformer": lambda: Transformer((3,), width=8, heads=2, depth=2, context=4, ff_size=8),
}


def _unroll(torso, obs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torso.unroll(obs, torso.initial_state(obs.shape[1]), keep)


@pytest.mark.parametrize("kind", sorted(TORSOS))
def test_a_step_never_sees_the_future(kind):
    torch.manual_seed(0)
    torso = TORSOS[kind]()
    obs, keep = torch.randn(8, 2, 3), torch.ones(8, 2, dtype=torch.bool)
    changed = obs.clone()
    changed[5] += 3.0
    before, after = _unroll(torso, obs, keep), _unroll(torso, changed, keep)
    torch.testing.assert_close(before[:5], after[:5], rtol=0, atol=0)
    assert (before[5:] - after[5:]).abs().amax() > 1e-3  # the change is seen from step 5 on


@pytest.mark.parametrize("kind", sorted(TORSOS))
def test_a_new_episode_sees_nothing_of_the_last(kind):
    torch.manual_seed(0)
    torso = TORSOS[kind]()
    obs, keep = torch.randn(8, 2, 3), torch.ones(8, 2, dtype=torch.bool)
    keep[3, 0] = False  # env 0's episode ends at step 3; env 1's goes on
    changed = obs.clone()
    changed[:4] += 3.0
    before, after = _unroll(torso, obs, keep), _unroll(torso, changed, keep)
    torch.testing.assert_close(before[4:, 0], after[4:, 0], rtol=0, atol=0)
    assert (before[4:, 1] - after[4:, 1]).abs().amax() > 1e-3


@pytest.mark.parametrize("kind", sorted(TORSOS))
def test_unroll_is_the_same_as_stepping_with_resets(kind):
    """What acting saw step by step is what the loss's one-pass unroll computes."""
    torch.manual_seed(0)
    torso = TORSOS[kind]()
    obs, keep = torch.randn(9, 3, 3), torch.ones(9, 3, dtype=torch.bool)
    keep[2, 0], keep[6, 1] = False, False
    with torch.no_grad():
        state = torso.initial_state(3)
        for _ in range(5):  # a state from an earlier rollout, as the collector carries it
            _, state = torso(torch.randn(3, 3), state)
        unrolled = torso.unroll(obs, state, keep)
        for t in range(9):
            features, state = torso(obs[t], state)
            torch.testing.assert_close(features, unrolled[t])
            state = mask_state(state, keep[t])


def test_attention_reaches_back_context_steps_and_no_further():
    """One block: step t attends over steps t - context + 1 .. t."""
    torch.manual_seed(0)
    torso = Transformer((3,), width=8, heads=2, depth=1, context=4, ff_size=8)
    obs, keep = torch.randn(10, 1, 3), torch.ones(10, 1, dtype=torch.bool)
    changed = obs.clone()
    changed[2] += 3.0
    difference = (_unroll(torso, obs, keep) - _unroll(torso, changed, keep)).abs().amax(dim=(1, 2))
    assert (difference[2:6] > 1e-3).all()  # steps 2..5 see step 2
    assert (difference[6:] == 0).all() and (difference[:2] == 0).all()


def test_a_window_ignores_its_padding_and_matches_the_unroll():
    torch.manual_seed(0)
    torso = Transformer((3,), width=8, heads=2, depth=2, context=4, ff_size=8)
    obs = torch.randn(1, 4, 3)
    valid = torch.tensor([[False, True, True, True]])
    padded = obs.clone()
    padded[0, 0] = 7.0  # what lies in the padding must not matter
    with torch.no_grad():
        window = torso.window(obs, valid)
        torch.testing.assert_close(window, torso.window(padded, valid), rtol=0, atol=0)
        # The window's last step is the unroll's last step from the episode's start.
        unrolled = torso.unroll(obs[:, 1:].transpose(0, 1), torso.initial_state(1), valid[:, 1:].T)
    torch.testing.assert_close(window, unrolled[-1])


def test_gtrxl_gates_start_near_the_identity():
    """g(x, y) ≈ x at initialisation with the paper's gate bias 2 (z ≈ σ(-2) ≈ 0.12), where a
    zero bias lets half of the branch through."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 64), torch.randn(256, 64)
    with torch.no_grad():
        near = (GRUGate(64, 2.0)(x, y) - x).norm() / x.norm()
        open_ = (GRUGate(64, 0.0)(x, y) - x).norm() / x.norm()
    assert near < 0.25 < 0.45 < open_, (near, open_)


def test_lstm_forget_bias_shifts_only_the_forget_gate():
    torch.manual_seed(0)
    plain = LSTM((3,), hidden_size=4, forget_bias=0.0)
    torch.manual_seed(0)
    kept = LSTM((3,), hidden_size=4, forget_bias=2.0)
    gates = kept.cell.bias_hh.detach() - plain.cell.bias_hh.detach()  # (input, forget, cell, out)
    torch.testing.assert_close(gates, torch.tensor([0.0] * 4 + [2.0] * 4 + [0.0] * 8))
    assert compose_config("agent=a2c", "net=lstm", "net.forget_bias=2").net.forget_bias == 2


def test_impala_resnet_has_three_pooled_stages_of_two_residual_blocks():
    torso = ImpalaResNet((1, 80, 40))
    blocks = [m for m in torso.modules() if isinstance(m, ResidualBlock)]
    pools = [m for m in torso.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(blocks) == 6 and len(pools) == 3
    with torch.no_grad():
        assert torso.convs(torch.zeros(2, 1, 80, 40)).shape == (2, 32 * 10 * 5)  # 80x40 / 8
        assert torso(torch.zeros(2, 1, 80, 40, dtype=torch.uint8)).shape == (2, 256)
    with pytest.raises(ConfigError, match="net=impala_resnet needs image observations"):
        ImpalaResNet((4,))


def test_mlp_layer_norm_normalises_each_hidden_layer_before_its_activation():
    """``net.layer_norm=true``: each hidden layer's pre-activations have mean 0 and variance 1
    over its units whatever the input's scale (the affine starts at 1 and 0)."""
    plain = instantiate(compose_config("agent=dqn", "tuned=none").net, obs_shape=(4,))
    with_norm = compose_config("agent=dqn", "tuned=none", "net.layer_norm=true")
    normed = instantiate(with_norm.net, obs_shape=(4,))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())
    norms = [m for m in normed.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert [n.normalized_shape for n in norms] == [(128,), (128,)]
    pre = {}
    norms[0].register_forward_hook(lambda _m, _i, out: pre.setdefault("out", out))
    with torch.no_grad():
        normed(1000 * torch.randn(5, 4))
    out = pre["out"]
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["agent=a2c", "net=transformer", "net.context=0"], ["net.context=0", "positive"]),
        (["agent=dqn", "net=gru"], ["net=gru", "agent=dqn", "agent=a2c or a3c", "transformer"]),
    ],
    ids=["context 0", "dqn with a gru"],
)
def test_a_torso_an_agent_cannot_take_is_a_one_line_error(tmp_path, overrides, needles):
    assert_one_line_error(lab(tmp_path / "run", *overrides, "logger=none"), *needles)


def test_dqn_refuses_lstm_and_sb3_refuses_every_lab_torso():
    with pytest.raises(ConfigError, match=r"net=lstm .* agent=a2c or a3c"):
        build_agent(compose_config("agent=dqn", "net=lstm"), CPU)
    for net in ("lstm", "gru", "transformer", "impala_resnet"):
        target = compose_config(f"net={net}").net
        with pytest.raises(ConfigError, match=f"cannot express net=.*{target._target_}"):
            sb3_policy(target, spaces.Box(0, 255, (1, 80, 40), "uint8"), "sb3_ppo")


@pytest.mark.parametrize("agent", ["a2c", "a3c"])
@pytest.mark.parametrize("net", ["gru", "transformer"])
def test_actor_critics_take_the_memory_torsos_and_learn_a_step(agent, net):
    extra = ["agent.workers=1", "agent.envs_per_worker=2"] if agent == "a3c" else []
    cfg = compose_config(f"agent={agent}", f"net={net}", "env=tmaze", "eval.episodes=1", *extra)
    seed_everything(0)
    task = RLTask(cfg, CPU)
    try:
        metrics = task.train_step(64)
        assert metrics["counter/updates"] > 0 and task.agent.model.recurrent
        assert task.evaluate(None)[0]["eval/length_mean"] == cfg.env.length + 1
    finally:
        task.close()


def test_transformer_config_keys_reach_the_torso():
    cfg = OmegaConf.create(
        {"_target_": "lab.nets_attention.Transformer", "width": 16, "heads": 4, "depth": 3}
    )
    torso = instantiate(OmegaConf.merge(cfg, {"context": 5}), obs_shape=(2,))
    assert len(torso.blocks) == 3 and torso.blocks[0].heads == 4 and torso.out_dim == 16
    assert [s.shape for s in torso.initial_state(2)] == [(2, 4)] + [(2, 4, 16)] * 3
