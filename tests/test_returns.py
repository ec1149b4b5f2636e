"""Return maths, the n-step collector and the replay buffer against hand-computed cases."""

import numpy as np
import pytest
import torch

from lab.rl.replay import NStepCollector, ReplayBuffer
from lab.rl.returns import (
    discounted_return,
    double_q_value,
    gae,
    nstep_returns,
    td_target,
)
from lab.schedules import linear_schedule


def test_discounted_return():
    assert discounted_return([1.0, 2.0, 3.0], 0.5) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert discounted_return([], 0.9) == 0.0


def test_td_target_bootstraps_unless_terminated():
    reward = torch.tensor([1.0, 1.0])
    discount = torch.tensor([0.81, 0.0])  # γ² after a 2-step window; 0 at termination
    next_value = torch.tensor([10.0, 10.0])
    assert td_target(reward, discount, next_value).tolist() == pytest.approx([9.1, 1.0])


def test_double_q_uses_online_argmax_and_target_value():
    online = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    target = torch.tensor([[7.0, 0.5], [4.0, 9.0]])
    assert double_q_value(online, target).tolist() == [0.5, 4.0]


def test_linear_schedule():
    assert linear_schedule(0, 1.0, 0.1, 100) == 1.0
    assert linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_schedule(500, 1.0, 0.1, 100) == pytest.approx(0.1)


def _push(collector, env_obs, actions, rewards, next_obs, terminated, truncated, valid=None):
    n = len(actions)
    return collector.push(
        np.array(env_obs, dtype=np.float32)[:, None],
        np.array(actions),
        np.array(rewards, dtype=np.float32),
        np.array(next_obs, dtype=np.float32)[:, None],
        np.array(terminated),
        np.array(truncated),
        np.ones(n, dtype=bool) if valid is None else np.array(valid),
    )


def test_nstep_window_emits_after_n_rewards():
    c = NStepCollector(num_envs=1, n=3, gamma=0.5)
    assert _push(c, [0], [0], [1.0], [1], [False], [False]) is None
    assert _push(c, [1], [1], [2.0], [2], [False], [False]) is None
    obs, actions, returns, next_obs, discounts = _push(c, [2], [0], [4.0], [3], [False], [False])
    # s0 -> s3 with R = 1 + 0.5·2 + 0.25·4 = 3 and discount γ³ = 0.125
    assert obs[:, 0].tolist() == [0] and next_obs[:, 0].tolist() == [3]
    assert actions.tolist() == [0]
    assert returns.tolist() == pytest.approx([3.0])
    assert discounts.tolist() == pytest.approx([0.125])


def test_nstep_terminal_mid_window_flushes_with_zero_discount():
    c = NStepCollector(num_envs=1, n=3, gamma=0.5)
    _push(c, [0], [0], [1.0], [1], [False], [False])
    out = _push(c, [1], [1], [2.0], [2], [True], [False])
    obs, _, returns, next_obs, discounts = out
    assert obs[:, 0].tolist() == [0, 1]
    assert returns.tolist() == pytest.approx([1 + 0.5 * 2, 2.0])
    assert discounts.tolist() == [0.0, 0.0]  # no bootstrap past a terminal state
    assert next_obs[:, 0].tolist() == [2, 2]


def test_nstep_truncation_bootstraps_from_final_observation():
    c = NStepCollector(num_envs=1, n=3, gamma=0.5)
    _push(c, [0], [0], [1.0], [1], [False], [False])
    _, _, returns, next_obs, discounts = _push(c, [1], [1], [2.0], [2], [False], [True])
    assert returns.tolist() == pytest.approx([2.0, 2.0])
    assert discounts.tolist() == pytest.approx([0.25, 0.5])  # γ^k for k rewards: bootstrap
    assert next_obs[:, 0].tolist() == [2, 2]


def test_nstep_skips_autoreset_steps_and_keeps_envs_apart():
    c = NStepCollector(num_envs=2, n=2, gamma=0.9)
    no, yes = [False, False], [True, True]
    assert _push(c, [0, 100], [0, 1], [1.0, 10.0], [1, 101], no, no, valid=yes) is None
    # env 0 terminates: both its pending transitions leave with discount 0; env 1 has n rewards.
    obs, actions, returns, next_obs, discounts = _push(
        c, [1, 101], [1, 0], [2.0, 20.0], [2, 102], [True, False], no, valid=yes
    )
    assert obs[:, 0].tolist() == [0, 1, 100] and actions.tolist() == [0, 1, 1]
    assert returns.tolist() == pytest.approx([1 + 0.9 * 2, 2.0, 10 + 0.9 * 20])
    assert next_obs[:, 0].tolist() == [2, 2, 102]
    assert discounts.tolist() == pytest.approx([0.0, 0.0, 0.81])
    # env 0's next step only resets it (reward 99 is not a transition); env 1 goes on alone.
    obs, actions, returns, next_obs, discounts = _push(
        c, [2, 102], [0, 1], [99.0, 30.0], [3, 103], no, no, valid=[False, True]
    )
    assert obs[:, 0].tolist() == [101] and actions.tolist() == [0]
    assert returns.tolist() == pytest.approx([20 + 0.9 * 30])
    assert next_obs[:, 0].tolist() == [103] and discounts.tolist() == pytest.approx([0.81])
    # env 0's first real step after the reset starts a fresh queue: nothing of 99 or 2 in it.
    assert _push(c, [3, 103], [1, 1], [4.0, 40.0], [4, 104], no, no, valid=yes)[2].tolist() == [
        pytest.approx(30 + 0.9 * 40)
    ]
    obs, _, returns, _, _ = _push(c, [4, 104], [0, 0], [5.0, 50.0], [5, 105], no, no, valid=yes)
    assert obs[:, 0].tolist() == [3, 103]
    assert returns.tolist() == pytest.approx([4 + 0.9 * 5, 40 + 0.9 * 50])


def test_replay_buffer_wraps_and_round_trips():
    buf = ReplayBuffer(capacity=4, obs_shape=(2,), obs_dtype=np.float32, seed=0)
    for i in range(6):
        buf.add(
            np.full((1, 2), i),
            np.array([i]),
            np.array([float(i)]),
            np.full((1, 2), i + 1),
            np.array([0.9]),
        )
    assert len(buf) == 4
    assert sorted(buf.actions.tolist()) == [2, 3, 4, 5]  # the oldest two were overwritten
    batch = buf.sample(8, torch.device("cpu"))
    assert batch.obs.shape == (8, 2)
    assert torch.equal(batch.next_obs, batch.obs + 1)
    clone = ReplayBuffer(capacity=4, obs_shape=(2,), obs_dtype=np.float32, seed=123)
    clone.load_state_dict(buf.state_dict())
    assert torch.equal(
        clone.sample(8, torch.device("cpu")).obs, buf.sample(8, torch.device("cpu")).obs
    )


def _column(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)[:, None]  # (T, N=1)


def test_nstep_returns_bootstrap_and_restart_at_a_terminal():
    # Steps 0-1 end in a termination; steps 2-3 run on and bootstrap from V(s_4) = 10.
    rewards = _column(1.0, 2.0, 3.0, 4.0)
    next_values = _column(5.0, 0.0, 7.0, 10.0)  # 0 after the terminal; V(s_{t+1}) otherwise
    cuts = _column(False, True, False, False, dtype=torch.bool)
    returns = nstep_returns(rewards, next_values, cuts, gamma=0.5)
    assert returns[:, 0].tolist() == pytest.approx(
        [1 + 0.5 * 2, 2.0, 3 + 0.5 * (4 + 0.5 * 10), 4 + 0.5 * 10]
    )


def test_nstep_returns_bootstrap_from_the_final_observation_at_a_truncation():
    rewards = _column(1.0, 1.0, 1.0)
    next_values = _column(9.0, 20.0, 3.0)  # step 1 truncated: V(final obs) = 20, not V(reset)
    cuts = _column(False, True, False, dtype=torch.bool)
    returns = nstep_returns(rewards, next_values, cuts, gamma=0.9)
    assert returns[:, 0].tolist() == pytest.approx(
        [1 + 0.9 * (1 + 0.9 * 20), 1 + 0.9 * 20, 1 + 0.9 * 3]
    )


def test_gae_by_hand_and_equal_to_nstep_at_lambda_one():
    rewards = _column(1.0, 2.0, 3.0)
    values = _column(0.5, 1.0, 1.5)
    next_values = _column(1.0, 0.0, 4.0)  # termination after step 1
    cuts = _column(False, True, False, dtype=torch.bool)
    gamma, lam = 0.9, 0.8
    d0, d1, d2 = 1 + 0.9 * 1.0 - 0.5, 2 + 0.0 - 1.0, 3 + 0.9 * 4.0 - 1.5
    expected = [d0 + gamma * lam * d1, d1, d2]  # no carry across the terminal
    adv = gae(rewards, values, next_values, cuts, gamma, lam)
    assert adv[:, 0].tolist() == pytest.approx(expected)
    full = gae(rewards, values, next_values, cuts, gamma, 1.0) + values
    assert torch.allclose(full, nstep_returns(rewards, next_values, cuts, gamma))


def test_policy_terms_match_torch_distributions():
    from torch.distributions import Categorical

    from lab.rl.actor_critic import policy_terms

    logits = torch.randn(3, 2, 4)
    actions = torch.randint(0, 4, (3, 2))
    log_probs, entropies = policy_terms(logits, actions)
    dist = Categorical(logits=logits)
    assert torch.allclose(log_probs, dist.log_prob(actions))
    assert torch.allclose(entropies, dist.entropy())
