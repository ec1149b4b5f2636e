"""What A2C and A3C share: the actor-critic model, rollout collection and the loss.

One implementation of the maths for both: A3C's workers and A2C's single learner call the
same ``RolloutCollector.collect`` and ``actor_critic_loss``.
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch import nn

from lab.errors import ConfigError
from lab.rl.returns import gae, nstep_returns

State = tuple[torch.Tensor, torch.Tensor] | None


class ActorCritic(nn.Module):
    """A torso from the ``net`` group (feed-forward or recurrent) with policy and value heads."""

    def __init__(self, torso: nn.Module, n_actions: int, value_torso: nn.Module | None = None):
        super().__init__()
        self.torso = torso
        self.recurrent = bool(getattr(torso, "recurrent", False))
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

    def initial_state(self, batch: int) -> State:
        return self.torso.initial_state(batch) if self.recurrent else None

    def forward(self, obs: torch.Tensor, state: State = None):
        features, state = self._features(obs, state)
        value_features = features if self.value_torso is None else self.value_torso(obs)
        return self.policy(features), self.value(value_features).squeeze(-1), state

    def policy_logits(self, obs: torch.Tensor, state: State = None):
        """The policy alone, for acting: half the cost of ``forward`` with a critic torso."""
        features, state = self._features(obs, state)
        return self.policy(features), state

    def _features(self, obs: torch.Tensor, state: State):
        if self.recurrent:
            return self.torso(obs, state)
        return self.torso(obs), None


def mask_state(state: State, keep: torch.Tensor) -> State:
    """Zero the recurrent state of the envs where ``keep`` is False (a new episode starts)."""
    if state is None:
        return None
    keep = keep.to(state[0].dtype)[:, None]
    return state[0] * keep, state[1] * keep


def detach_state(state: State) -> State:
    return None if state is None else (state[0].detach(), state[1].detach())


class Rollout(NamedTuple):
    """A (T, N) rollout. ``valid`` is False on Gymnasium's next-step autoreset steps."""

    log_probs: torch.Tensor
    entropies: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    cuts: torch.Tensor
    valid: torch.Tensor
    bootstrap: torch.Tensor


class RolloutCollector:
    """Steps a vector env with an actor-critic, keeping the graph for the loss.

    The recurrent state is carried across rollouts (detached at their boundary) and zeroed
    when an env starts a new episode.
    """

    def __init__(self, envs: VectorEnv, seed: int, device: torch.device):
        self.envs, self.device = envs, device
        self.num_envs = envs.num_envs
        self.obs, _ = envs.reset(seed=seed)
        self.resetting = np.zeros(self.num_envs, dtype=bool)
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.state: State = None
        self.started = False

    def collect(self, model: ActorCritic, steps: int, finished: dict[str, list[float]]):
        """``steps`` vector steps; returns the rollout and the number of real transitions."""
        if not self.started:
            self.state, self.started = model.initial_state(self.num_envs), True
        state = detach_state(self.state)
        logits_, actions_, values_ = [], [], []
        columns: dict[str, list] = {"rewards": [], "terminated": [], "cuts": [], "valid": []}
        transitions = 0
        for _ in range(steps):
            logits, value, state = model(torch.as_tensor(self.obs, device=self.device), state)
            with torch.no_grad():  # sampling needs no graph; log-probs are taken below in one go
                action = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
            obs, reward, terminated, truncated, _ = self.envs.step(action.cpu().numpy())
            valid = ~self.resetting
            cut = (terminated | truncated) & valid
            logits_.append(logits)
            actions_.append(action)
            values_.append(value)
            for key, item in (
                ("rewards", reward * valid),
                ("terminated", terminated & valid),
                ("cuts", cut),
                ("valid", valid),
            ):
                columns[key].append(torch.as_tensor(item, device=self.device))
            self._book_episodes(reward, valid, cut, finished)
            transitions += int(valid.sum())
            # A step that only reset an env returned its new episode's first observation.
            state = mask_state(state, torch.as_tensor(valid, device=self.device))
            self.resetting, self.obs = cut, obs
        with torch.no_grad():
            _, bootstrap, _ = model(torch.as_tensor(self.obs, device=self.device), state)
        self.state = detach_state(state)
        log_probs, entropies = policy_terms(torch.stack(logits_), torch.stack(actions_))
        rollout = Rollout(
            log_probs=log_probs,
            entropies=entropies,
            values=torch.stack(values_),
            **{k: torch.stack(v) for k, v in columns.items()},
            bootstrap=bootstrap,
        )
        return rollout, transitions

    def _book_episodes(self, reward, valid, cut, finished) -> None:
        self.ep_return += reward * valid
        self.ep_length += valid
        for e in np.flatnonzero(cut):
            finished["rollout/episode_return"].append(float(self.ep_return[e]))
            finished["rollout/episode_length"].append(float(self.ep_length[e]))
        self.ep_return[cut], self.ep_length[cut] = 0.0, 0


def policy_terms(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(a|s) of the taken actions and the policy's entropy, for a (T, N, A) batch."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_probs = log_p.gather(-1, actions[..., None]).squeeze(-1)
    entropies = -(log_p.exp() * log_p).sum(-1)
    return log_probs, entropies


def actor_critic_loss(
    rollout: Rollout,
    gamma: float,
    gae_lambda: float | None,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy gradient with advantages, value regression and an entropy bonus (Mnih et al. 2016).

    Advantages are n-step returns − V (the paper), or GAE(λ) when ``gae_lambda`` is set.
    """
    r = rollout
    values = r.values.detach()
    # V of the state after each step: the next step's value (for a truncation that is V of the
    # final observation, seen on the autoreset step), the bootstrap at the end, 0 if terminated.
    next_values = torch.cat([values[1:], r.bootstrap[None]]) * (~r.terminated)
    rewards = r.rewards.float()
    if gae_lambda is None:
        returns = nstep_returns(rewards, next_values, r.cuts, gamma)
        advantages = returns - values
    else:
        advantages = gae(rewards, values, next_values, r.cuts, gamma, gae_lambda)
        returns = advantages + values
    mask = r.valid.float()
    count = mask.sum().clamp(min=1.0)
    policy_loss = -(r.log_probs * advantages * mask).sum() / count
    value_loss = 0.5 * ((returns - r.values) ** 2 * mask).sum() / count
    entropy = (r.entropies * mask).sum() / count
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    metrics = {
        "train/policy_loss": policy_loss.detach(),
        "train/value_loss": value_loss.detach(),
        "train/entropy": entropy.detach(),
    }
    return loss, metrics


def greedy_policy(model: ActorCritic, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """A deterministic (argmax) policy with its own recurrent state, for one evaluation."""
    state: list[State] = [None]

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        if model.recurrent and state[0] is None:
            state[0] = model.initial_state(len(obs))
        logits, state[0] = model.policy_logits(torch.as_tensor(obs, device=device), state[0])
        return logits.argmax(dim=1).cpu().numpy()

    return act


def share_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state now, in shared memory, so Hogwild workers update one copy.

    One step on zero gradients makes torch create exactly the state it expects (it leaves
    the parameters unchanged without weight decay), then the step counters go back to 0.
    """
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0) or group.get("momentum", 0):
            raise ConfigError(
                "agent.optimizer: shared optimizers here take no weight_decay or momentum"
            )
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for state in optimizer.state.values():
        for key, value in state.items():
            if key == "step":
                value.zero_()
            value.share_memory_()
    optimizer.zero_grad(set_to_none=True)


def build_actor_critic(
    net_cfg, obs_space, action_space, name: str, env_id: str, shared_torso: bool | None
) -> ActorCritic:
    """Policy and value share one torso, or get one each.

    ``shared_torso=None`` decides by the net: images and recurrent cores share (the paper's
    Atari agents; a second CNN would double the cost), small MLPs get a critic of their own.
    Recurrent cores always share.
    """
    from lab.config import instantiate
    from lab.rl.env import require_discrete

    n_actions = require_discrete(action_space, name, env_id)
    torso = instantiate(net_cfg, obs_shape=obs_space.shape)
    recurrent = getattr(torso, "recurrent", False)
    if shared_torso is None:
        shared_torso = recurrent or len(obs_space.shape) == 3
    value_torso = None
    if not shared_torso and not recurrent:
        value_torso = instantiate(net_cfg, obs_shape=obs_space.shape)
    return ActorCritic(torso, n_actions, value_torso)
