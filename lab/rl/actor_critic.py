"""What A2C and A3C share: the actor-critic model, rollout collection and the loss.

One implementation of the maths for both: A3C's workers and A2C's single learner call the
same ``RolloutCollector.collect`` and ``actor_critic_loss``.
"""

from typing import NamedTuple

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from lab.config import instantiate, require_positive
from lab.errors import ConfigError
from lab.nets import State, Torso, mask_state
from lab.rl.agent import EpisodeLists, Policy, book_episodes
from lab.rl.env import require_discrete
from lab.rl.returns import gae, nstep_returns


class ActorCritic(nn.Module):
    """A torso from the ``net`` group (feed-forward or recurrent) with policy and value heads."""

    def __init__(self, torso: Torso, n_actions: int, value_torso: Torso | None = None):
        super().__init__()
        self.torso = torso
        self.recurrent = torso.recurrent
        # A separate value torso keeps large value errors from wrecking the policy's features.
        self.value_torso = value_torso
        self.policy = nn.Linear(torso.out_dim, n_actions)
        self.value = nn.Linear(torso.out_dim, 1)
        # Near-uniform initial policy (as in Engstrom et al. 2020's A2C/PPO details).
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)

    def clipped_parameters(self) -> list[nn.Parameter]:
        """What gradient clipping applies to: the policy side when the critic has its own torso.

        Clipping the critic biases it upward on CartPole-like tasks: the rare large errors at
        terminal states are scaled down, the frequent small bootstrapped ones are not, and
        V runs away (we measured V -> thousands with returns <= 100). Shared torsos clip all.
        """
        if self.value_torso is None:
            return list(self.parameters())
        return [*self.torso.parameters(), *self.policy.parameters()]

    def initial_state(self, batch: int) -> State | None:
        if not self.recurrent:
            return None
        return self.torso.initial_state(batch, device=self.value.weight.device)

    def forward(self, obs: torch.Tensor, state: State | None = None):
        features, state = self._features(obs, state)
        value_features = features if self.value_torso is None else self.value_torso(obs)
        return self.policy(features), self.value(value_features).squeeze(-1), state

    def policy_logits(self, obs: torch.Tensor, state: State | None = None):
        """The policy alone, for acting: half the cost of ``forward`` with a critic torso."""
        features, state = self._features(obs, state)
        return self.policy(features), state

    def unroll(self, obs: torch.Tensor, state: State | None, keep: torch.Tensor):
        """Logits and values of a (T, N, ...) observation sequence, in one batched pass.

        A recurrent torso starts from ``state`` and zeroes it after step t where ``keep[t]``
        is False (a new episode starts); a feed-forward one sees all T·N observations at once.
        """
        steps, n = obs.shape[:2]
        flat = obs.flatten(0, 1)
        if self.recurrent:
            features = self.torso.unroll(obs, state, keep).flatten(0, 1)
        else:
            features = self.torso(flat)
        value_features = features if self.value_torso is None else self.value_torso(flat)
        logits = self.policy(features).view(steps, n, -1)
        return logits, self.value(value_features).view(steps, n)

    def _features(self, obs: torch.Tensor, state: State | None):
        if self.recurrent:
            return self.torso(obs, state)
        return self.torso(obs), None


def sample_actions(logits: torch.Tensor) -> torch.Tensor:
    """One draw from softmax(logits) per row, by the Gumbel-max trick.

    argmax(logits + Gumbel noise) is an exact categorical sample, and -log E with E ~ Exp(1) is
    Gumbel noise; it costs a third of ``torch.multinomial(softmax(logits))`` on small batches.
    """
    return (logits - torch.empty_like(logits).exponential_().log()).argmax(-1)


class Rollout(NamedTuple):
    """A (T, N) rollout; ``obs`` has T + 1 rows, the last one the bootstrap observation.

    ``valid`` is False on Gymnasium's next-step autoreset steps; ``state`` is the recurrent
    state the rollout started from (a tuple of tensors of any shapes the torso keeps, such as
    an LSTM's (h, c), a GRU's (h,) or a transformer's memories; None for feed-forward nets).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    cuts: torch.Tensor
    valid: torch.Tensor
    state: State | None


class RolloutCollector:
    """Steps a vector env with an actor-critic's policy, without building a graph.

    The loss runs the model once over the whole rollout (``ActorCritic.unroll``): the weights
    do not change during a rollout, so that gives the same logits and values as acting did, at
    a fraction of the cost of T small forward passes and their backward passes. The recurrent
    state is carried across rollouts and zeroed when an env starts a new episode.
    """

    def __init__(self, envs: VectorEnv, seed: int, device: torch.device):
        self.envs, self.device = envs, device
        self.num_envs = envs.num_envs
        self.obs, _ = envs.reset(seed=seed)
        self.resetting = np.zeros(self.num_envs, dtype=bool)
        self.state: State | None = None
        self.started = False

    @torch.no_grad()
    def collect(self, model: ActorCritic, steps: int, finished: EpisodeLists):
        """``steps`` vector steps; returns the rollout and the number of real transitions."""
        if not self.started:
            self.state, self.started = model.initial_state(self.num_envs), True
        start, state = self.state, self.state
        obs_, actions_ = [], []
        columns: dict[str, list[np.ndarray]] = {
            "rewards": [],
            "terminated": [],
            "cuts": [],
            "valid": [],
        }
        transitions = 0
        for _ in range(steps):
            obs_.append(torch.as_tensor(self.obs, device=self.device))
            logits, state = model.policy_logits(obs_[-1], state)
            action = sample_actions(logits)
            actions_.append(action)
            obs, reward, terminated, truncated, infos = self.envs.step(action.cpu().numpy())
            valid = ~self.resetting
            cut = (terminated | truncated) & valid
            columns["rewards"].append(reward * valid)
            columns["terminated"].append(terminated & valid)
            columns["cuts"].append(cut)
            columns["valid"].append(valid)
            book_episodes(infos, finished)
            transitions += int(valid.sum())
            if state is not None:  # a step that only reset an env began its next episode
                state = mask_state(state, torch.as_tensor(valid, device=self.device))
            self.resetting, self.obs = cut, obs
        obs_.append(torch.as_tensor(self.obs, device=self.device))
        self.state = state
        rollout = Rollout(
            obs=torch.stack(obs_),
            actions=torch.stack(actions_),
            **{k: torch.as_tensor(np.stack(v), device=self.device) for k, v in columns.items()},
            state=start,
        )
        return rollout, transitions


class LossSettings(NamedTuple):
    """``actor_critic_loss``'s settings, in its argument order (A2C and A3C keep one)."""

    gamma: float
    gae_lambda: float | None  # None: n-step returns (the paper); else GAE(λ)
    value_coef: float
    entropy_coef: float


def policy_terms(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(a|s) of the taken actions and the policy's entropy, for a (T, N, A) batch."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_probs = log_p.gather(-1, actions[..., None]).squeeze(-1)
    entropies = -(log_p.exp() * log_p).sum(-1)
    return log_probs, entropies


def actor_critic_loss(
    model: ActorCritic,
    rollout: Rollout,
    gamma: float,
    gae_lambda: float | None,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy gradient with advantages, value regression and an entropy bonus (Mnih et al. 2016).

    Advantages are n-step returns − V (the paper), or GAE(λ) when ``gae_lambda`` is set. The
    model runs once over the rollout's T + 1 observations; the last row is the bootstrap V.
    """
    r = rollout
    keep = torch.cat([r.valid, torch.ones_like(r.valid[:1])])
    all_logits, all_values = model.unroll(r.obs, r.state, keep)
    log_probs, entropies = policy_terms(all_logits[:-1].float(), r.actions)
    values_graph = all_values[:-1].float()
    # V of the state after each step: the next step's value (for a truncation that is V of the
    # final observation, seen on the autoreset step), the bootstrap at the end, 0 if terminated.
    next_values = all_values[1:].detach().float() * (~r.terminated)
    values = values_graph.detach()
    rewards = r.rewards.float()
    if gae_lambda is None:
        returns = nstep_returns(rewards, next_values, r.cuts, gamma)
        advantages = returns - values
    else:
        advantages = gae(rewards, values, next_values, r.cuts, gamma, gae_lambda)
        returns = advantages + values
    terms = PolicyTerms(log_probs, entropies, values_graph, r.valid)
    return policy_value_loss(terms, advantages, returns, value_coef, entropy_coef)


class PolicyTerms(NamedTuple):
    """What the net said about a (T, N) rollout: log π(a|s) and entropies of its policy, V with
    its graph, and which rows are real steps (``valid``)."""

    log_probs: torch.Tensor
    entropies: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor


def policy_value_loss(
    terms: PolicyTerms,
    advantages: torch.Tensor,
    targets: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """−log π · advantage, plus ``value_coef`` · ½(target − V)², minus ``entropy_coef`` ·
    entropy, each a mean over the valid rows: the loss of A2C, A3C and IMPALA alike, which
    differ only in the advantages and targets they pass."""
    mask = terms.valid.float()
    count = mask.sum().clamp(min=1.0)
    policy_loss = -(terms.log_probs * advantages * mask).sum() / count
    value_loss = 0.5 * ((targets - terms.values) ** 2 * mask).sum() / count
    entropy = (terms.entropies * mask).sum() / count
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    metrics = {
        "train/policy_loss": policy_loss.detach(),
        "train/value_loss": value_loss.detach(),
        "train/entropy": entropy.detach(),
    }
    return loss, metrics


def greedy_policy(model: ActorCritic, device: torch.device) -> Policy:
    """A deterministic (argmax) policy with its own recurrent state, for one evaluation."""
    state: list[State | None] = [None]

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        if model.recurrent and state[0] is None:
            state[0] = model.initial_state(len(obs))
        logits, state[0] = model.policy_logits(torch.as_tensor(obs, device=device), state[0])
        return logits.argmax(dim=1).cpu().numpy()

    return act


def build_actor_critic(
    net_cfg, obs_space, action_space, name: str, env_id: str, shared_torso: bool | None
) -> ActorCritic:
    """Policy and value share one torso, or get one each.

    ``shared_torso=None`` decides by the net: images and recurrent cores share (the paper's
    Atari agents; a second CNN would double the cost), small MLPs get a critic of their own.
    Recurrent cores always share.
    """
    n_actions = require_discrete(action_space, name, env_id)
    torso = instantiate(net_cfg, obs_shape=obs_space.shape)
    if shared_torso is None:
        shared_torso = torso.recurrent or len(obs_space.shape) == 3
    value_torso = None
    if not shared_torso and not torso.recurrent:
        value_torso = instantiate(net_cfg, obs_shape=obs_space.shape)
    return ActorCritic(torso, n_actions, value_torso)


def check_actor_critic(gae_lambda: float | None, **positive: float) -> None:
    """Checks A2C and A3C share: positive sizes, λ in [0, 1] or null."""
    require_positive(**positive)
    lam = gae_lambda
    if lam is not None and not 0 <= lam <= 1:
        raise ConfigError(f"agent.gae_lambda={lam}: must be in [0, 1], or null for n-step returns")
