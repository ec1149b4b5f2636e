"""Deep Q-Network (Mnih et al. 2015) with the improvements that make it fast and reliable.

Double DQN (van Hasselt et al. 2016), an optional dueling head (Wang et al. 2016), n-step
returns (Sutton 1988; as in Rainbow), a Huber loss, gradient clipping, a hard or Polyak target
network, and a linear ε-greedy schedule, collecting from several environments per step.
Every hyperparameter is documented in ``conf/agent/dqn.yaml``.
"""

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lab.config import instantiate, require_positive
from lab.errors import ConfigError
from lab.rl.agent import AgentContext, EpisodeLists, Policy, book_episodes, episode_lists
from lab.rl.env import make_vec_env, require_discrete
from lab.rl.replay import Batch, NStepCollector, RecentObs, ReplayBuffer, Window, WindowReplay
from lab.rl.returns import double_q_value, td_target
from lab.schedules import annealed_lr, linear_schedule
from lab.stop import StopCheck, never

log = logging.getLogger("lab")


class QNetwork(nn.Module):
    """A torso from the ``net`` group and a Q head: plain, or dueling V(s) + A(s, a) − mean A."""

    def __init__(self, torso: nn.Module, n_actions: int, dueling: bool):
        super().__init__()
        self.torso = torso
        self.dueling = dueling
        self.head = nn.Linear(torso.out_dim, n_actions + int(dueling))

    def forward(self, obs: torch.Tensor | Window) -> torch.Tensor:
        """Q-values of observations, or (a windowed torso) of each window's last step."""
        features = self.torso.window(*obs) if isinstance(obs, Window) else self.torso(obs)
        out = self.head(features)
        if not self.dueling:
            return out
        value, advantage = out[:, :1], out[:, 1:]
        return value + advantage - advantage.mean(dim=1, keepdim=True)


class DQN:
    """Collects with ε-greedy from a vector env, learns from uniform replay."""

    def __init__(
        self,
        ctx: AgentContext,
        optimizer,
        num_envs: int = 4,
        lr: float = 1e-3,
        lr_anneal: bool = False,
        gamma: float = 0.98,
        n_step: int = 3,
        buffer_size: int = 100_000,
        batch_size: int = 64,
        learning_starts: int = 1_000,
        train_every: int = 1,
        gradient_steps: int = 2,
        target_tau: float = 1.0,
        target_interval: int = 500,
        double: bool = True,
        dueling: bool = False,
        huber_delta: float = 1.0,
        max_grad_norm: float | None = 10.0,
        eps_start: float = 1.0,
        eps_end: float = 0.05,
        eps_fraction: float = 0.2,
    ):
        check_hyperparameters(
            gamma=gamma,
            n_step=n_step,
            batch_size=batch_size,
            num_envs=num_envs,
            target_tau=target_tau,
            buffer_size=buffer_size,
        )
        self.compute, self.device = ctx.compute, ctx.device
        self.gamma, self.n_step, self.batch_size = gamma, n_step, batch_size
        self.learning_starts, self.train_every, self.gradient_steps = (
            learning_starts,
            train_every,
            gradient_steps,
        )
        self.target_tau, self.target_interval = target_tau, target_interval
        self.double, self.huber_delta, self.max_grad_norm = double, huber_delta, max_grad_norm
        self.eps_start, self.eps_end = eps_start, eps_end
        self.eps_steps = int(eps_fraction * ctx.total_steps)
        self.lr, self.lr_anneal, self.total_steps = lr, lr_anneal, ctx.total_steps

        self.envs = make_vec_env(ctx.env, num_envs, train=True)
        self.num_envs = num_envs
        self.n_actions = require_discrete(self.envs.single_action_space, ctx.name, ctx.env.id)
        obs_space = self.envs.single_observation_space
        torso = instantiate(ctx.net, obs_shape=obs_space.shape)
        if torso.recurrent and not torso.windowed:
            raise ConfigError(
                f"net={type(torso).__name__.lower()} carries a state from step to step, which "
                f"agent={ctx.name}'s replayed steps cannot: use it with agent=a2c or a3c, or take "
                "net=transformer (over windows of net.context steps), mlp, nature_cnn or "
                "impala_resnet"
            )
        self.q = QNetwork(torso, self.n_actions, dueling).to(self.device)
        # A windowed torso (net=transformer) reads the last net.context observations of an
        # episode: the buffer keeps each step once and builds the windows when it samples.
        self.context = torso.context if torso.windowed else 0
        # Double DQN's online values of s': for a small MLP, one forward over s and s' together
        # saves the per-call overhead that dominates; for a conv net the backward pass would
        # then run over both halves, so s' gets its own forward without a graph.
        self.fuse_double = len(obs_space.shape) == 1 and not self.context
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimizer = instantiate(optimizer)(self.q.parameters())
        if self.context:
            self.buffer = WindowReplay(
                buffer_size, obs_space, num_envs, self.context, n_step, ctx.seed
            )
        else:
            self.buffer = ReplayBuffer(buffer_size, obs_space.shape, obs_space.dtype, ctx.seed)
        self.collector = NStepCollector(num_envs, n_step, gamma)
        self.rng = np.random.default_rng(ctx.seed + 1)

        self.step = 0  # env steps, summed over the vector env
        self.updates = 0
        self.vector_steps = 0
        self._seed = ctx.seed
        self._reset_envs(ctx.seed)

    # Acting -----------------------------------------------------------------------------

    @torch.no_grad()
    def _act(self, epsilon: float) -> np.ndarray:
        """Greedy actions for the current observations (or windows), each random with
        probability ε."""
        if self.context:
            q = self.q(self.buffer.window(self.obs_ids, self.device))
        else:
            q = self.q(torch.as_tensor(self.obs, device=self.device))
        actions = q.argmax(dim=1).cpu().numpy()
        if epsilon > 0:
            explore = self.rng.random(len(actions)) < epsilon
            actions[explore] = self.rng.integers(self.n_actions, size=int(explore.sum()))
        return actions

    def policy(self) -> Policy:
        """Greedy in the online Q-network, running it alone."""
        q, device = self.q, self.device
        recent = RecentObs(self.context) if self.context else None

        @torch.inference_mode()
        def act(obs: np.ndarray) -> np.ndarray:
            if recent is None:
                return q(torch.as_tensor(obs, device=device)).argmax(dim=1).cpu().numpy()
            window = Window(*(torch.as_tensor(a, device=device) for a in recent.push(obs)))
            return q(window).argmax(dim=1).cpu().numpy()

        return act

    def epsilon(self) -> float:
        return linear_schedule(self.step, self.eps_start, self.eps_end, self.eps_steps)

    def _reset_envs(self, seed: int) -> None:
        self.obs, _ = self.envs.reset(seed=seed)
        self.resetting = np.zeros(self.num_envs, dtype=bool)
        self.collector.reset()
        if self.context:  # every env starts an episode
            self.obs_ids = self.buffer.history.record(self.obs, np.ones(self.num_envs, bool))

    def _collect(self, finished: EpisodeLists) -> None:
        """One vector step: act, store the n-step transitions, book finished episodes."""
        actions = self._act(self.epsilon())
        next_obs, reward, terminated, truncated, infos = self.envs.step(actions)
        valid = ~self.resetting  # next-step autoreset: this step only reset those sub-envs
        obs, after = self.obs, next_obs
        if self.context:  # transitions between ids; an autoreset step's next_obs starts one
            obs, after = self.obs_ids, self.buffer.history.record(next_obs, ~valid)
            self.obs_ids = after
        out = self.collector.push(obs, actions, reward, after, terminated, truncated, valid)
        if out is not None:
            self.buffer.add(*out)
        book_episodes(infos, finished)
        self.resetting = (terminated | truncated) & valid
        self.obs = next_obs
        self.step += int(valid.sum())
        self.vector_steps += 1

    # Learning ---------------------------------------------------------------------------

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Huber TD loss on the taken actions; also the mean Q and the mean action gap.

        The action gap (best minus second-best Q) is what the greedy policy rests on: once
        it is smaller than the Q-values' noise, the policy flips between evaluations.
        """
        with self.compute.autocast():
            if self.double and self.fuse_double:  # one forward of the online net over s, s'
                q_all, next_q_online = self.q(torch.cat([batch.obs, batch.next_obs])).chunk(2)
                next_q_online = next_q_online.detach()
            else:
                q_all = self.q(batch.obs)
            q = q_all.gather(1, batch.actions[:, None]).squeeze(1)
            with torch.no_grad():
                next_q_target = self.q_target(batch.next_obs)
                if self.double:
                    if not self.fuse_double:
                        next_q_online = self.q(batch.next_obs)
                    next_value = double_q_value(next_q_online, next_q_target)
                else:
                    next_value = next_q_target.max(dim=1).values
                target = td_target(batch.rewards, batch.discounts, next_value.float())
            loss = F.huber_loss(q.float(), target, delta=self.huber_delta)
        top2 = q_all.detach().float().topk(min(2, self.n_actions), dim=1).values
        return loss, q.detach().mean(), (top2[:, 0] - top2[:, -1]).mean()

    def update(self) -> tuple[torch.Tensor, ...]:
        loss, q_mean, gap = self.loss(self.buffer.sample(self.batch_size, self.device))
        grad_norm = self.compute.backward_step(loss, self.optimizer, self.max_grad_norm)
        self.updates += 1
        if self.target_tau < 1.0:
            online, target = list(self.q.parameters()), list(self.q_target.parameters())
            torch._foreach_lerp_(target, online, self.target_tau)
        elif self.updates % self.target_interval == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return loss.detach(), q_mean, gap, grad_norm

    def learn(self, budget: int, stop: StopCheck = never) -> dict[str, float | list[float]]:
        """Collect at least one vector step and up to ``budget`` env steps, updating as we go."""
        finished = episode_lists()
        stats, n_updates = torch.zeros(4, device=self.device), 0
        end = self.step + max(budget, 1)
        while self.step < end:
            self._collect(finished)
            ready = len(self.buffer) >= max(self.learning_starts, self.batch_size)
            if ready and self.vector_steps % self.train_every == 0:
                lr = annealed_lr(self.lr, self.lr_anneal, self.step, self.total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                for _ in range(self.gradient_steps):
                    stats += torch.stack(self.update())
                    n_updates += 1
            if stop():
                break
        metrics: dict[str, float | list[float]] = {
            "train/epsilon": self.epsilon(),
            "train/learning_rate": self.optimizer.param_groups[0]["lr"],
            **finished,
        }
        if n_updates:
            loss, q_mean, gap, grad_norm = (stats / n_updates).tolist()
            metrics |= {
                "train/loss": loss,
                "train/q_mean": q_mean,
                "train/action_gap": gap,
                "train/grad_norm": grad_norm,
            }
        metrics["counter/updates"] = self.updates
        return metrics

    # Checkpointing ----------------------------------------------------------------------

    def state_dict(self, resumable: bool) -> dict:
        state = {
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.compute.scaler.state_dict(),
            "counters": {
                "step": self.step,
                "updates": self.updates,
                "vector_steps": self.vector_steps,
            },
            "rng": self.rng.bit_generator.state,
        }
        if resumable:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores nets, optimizer, counters, RNG and (if saved) the replay buffer.

        Episodes in flight at save time are not restored: the envs start fresh episodes,
        seeded from the run seed and the step, so a resumed run is reproducible.
        """
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.compute.scaler.load_state_dict(state["scaler"])
        counters = state["counters"]
        self.step, self.updates = counters["step"], counters["updates"]
        self.vector_steps = counters["vector_steps"]
        self.rng.bit_generator.state = state["rng"]
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        else:
            log.warning("dqn resume: the checkpoint has no replay buffer; it refills from empty")
        log.info("dqn resume: episodes in flight at the checkpoint start afresh")
        self._reset_envs(self._seed + self.step)

    def nets(self) -> dict[str, nn.Module]:
        return {"q": self.q, "q_target": self.q_target}

    def close(self) -> None:
        self.envs.close()


def check_hyperparameters(**values: float) -> None:
    """Reject values no DQN can run with, naming the key."""
    require_positive(**{k: values[k] for k in ("n_step", "batch_size", "num_envs", "buffer_size")})
    if not 0 <= values["gamma"] <= 1:
        raise ConfigError(f"agent.gamma={values['gamma']}: must be in [0, 1]")
    if not 0 < values["target_tau"] <= 1:
        raise ConfigError(f"agent.target_tau={values['target_tau']}: must be in (0, 1]")
