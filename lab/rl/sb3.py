"""Stable-Baselines3 algorithms as baselines, driven by the lab's runner like any agent.

SB3 owns its training loop, so ``learn(budget)`` runs ``model.learn`` for one chunk. SB3 would
restart its schedules' progress at every such call (PPO's learning rate and clip range went
negative after the first chunk); instead every schedule handed to SB3 reads the run's own
progress, ``step / total_steps`` (``RunSchedule``), so they span the whole budget. SB3 builds its
own networks: the ``net`` group is translated into its ``policy_kwargs`` (``sb3_policy``), and
a net SB3 cannot express is refused rather than silently replaced. rl-zoo3's ``normalize: true``
(``agent.normalize``) wraps the training envs in SB3's ``VecNormalize``; its statistics travel
in the agent's state and normalise the observations the greedy policy sees, frozen
(``ObsNormalizer``), so evaluation returns stay the game's own.
"""

import logging

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lab.config import instantiate
from lab.errors import ConfigError
from lab.nets import ACTIVATIONS
from lab.rl.agent import AgentContext, Policy
from lab.rl.env import make_env, require_discrete, reward_clip
from lab.schedules import linear_schedule
from lab.stop import StopCheck, never

NET_KEYS = ("net_arch", "activation_fn", "features_extractor_kwargs")  # owned by the net group

log = logging.getLogger("lab")


def _algorithms() -> dict:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import A2C, DQN, PPO

    return {"dqn": DQN, "a2c": A2C, "ppo": PPO, "recurrent_ppo": RecurrentPPO}


RECURRENT = ("recurrent_ppo",)  # sb3-contrib's: an LSTM before the net group's MLP


class RunSchedule:
    """A schedule SB3 calls as ``f(progress_remaining)``; it reads the run's progress instead.

    Linear from ``start`` at step 0 to ``end`` at ``fraction`` of the budget, constant after:
    the zoo's ``lin_<start>`` is ``RunSchedule(agent, start)``, SB3 DQN's ε is
    ``RunSchedule(agent, 1.0, 0.05, exploration_fraction)``.
    """

    def __init__(self, agent: "SB3Agent", start: float, end: float = 0.0, fraction: float = 1.0):
        self.agent, self.start, self.end, self.fraction = agent, start, end, fraction

    def __call__(self, _sb3_progress_remaining: float) -> float:
        duration = int(self.fraction * self.agent.total_steps)
        return linear_schedule(self.agent.step, self.start, self.end, duration)


def _plain(node: DictConfig | dict | None) -> dict:
    return (
        OmegaConf.to_container(node, resolve=True)
        if OmegaConf.is_config(node)
        else dict(node or {})
    )


def _parse_schedules(hyperparams: dict, agent: "SB3Agent") -> dict:
    out = {}
    for key, value in hyperparams.items():
        if isinstance(value, str) and value.startswith("lin_"):
            value = RunSchedule(agent, float(value.removeprefix("lin_")))
        out[key] = value
    return out


class ObsNormalizer:
    """SB3's ``VecNormalize`` statistics as a checkpoint holds them, and the frozen view of
    them that evaluation uses (rl-zoo3's eval env: ``training=False, norm_reward=False``)."""

    def __init__(self, vec_normalize):
        self.vec_normalize = vec_normalize

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.vec_normalize.normalize_obs(obs)  # reads the statistics, never updates them

    def _running(self) -> dict:
        return {"obs": self.vec_normalize.obs_rms, "return": self.vec_normalize.ret_rms}

    def state_dict(self) -> dict:
        """Tensors and floats, so that a checkpoint loads with ``weights_only=True``."""
        return {
            name: {
                "mean": torch.as_tensor(np.asarray(rms.mean, dtype=np.float64)),
                "var": torch.as_tensor(np.asarray(rms.var, dtype=np.float64)),
                "count": float(rms.count),
            }
            for name, rms in self._running().items()
        }

    def load_state_dict(self, state: dict) -> None:
        for name, rms in self._running().items():
            rms.mean = state[name]["mean"].numpy().copy()
            rms.var = state[name]["var"].numpy().copy()
            rms.count = state[name]["count"]


def sb3_policy(net: DictConfig, obs_space: gym.Space, agent: str) -> tuple[str, dict]:
    """The SB3 policy class and ``policy_kwargs`` that build the net the ``net`` group names.

    ``net=mlp`` (any ``hidden_sizes``, ``activation``) becomes ``MlpPolicy`` with ``net_arch``
    and ``activation_fn`` (for A2C/PPO: policy and value nets of that shape each, as SB3's own
    default); ``net=nature_cnn`` becomes ``CnnPolicy`` with its ``features``. Anything else
    (a recurrent net) is refused: RecurrentPPO brings its own LSTM (``MlpLstmPolicy``) and
    the net group shapes the layers after it.
    """
    target = net._target_
    if target == "lab.nets.MLP":
        instantiate(net, obs_shape=obs_space.shape)  # the lab's own checks of the keys
        if net.get("layer_norm"):
            raise ConfigError(
                f"net.layer_norm=true: agent={agent} builds SB3's MlpPolicy, which has no "
                "LayerNorm; drop it (net.layer_norm=false) or use a lab agent"
            )
        kwargs = {"net_arch": list(net.hidden_sizes), "activation_fn": ACTIVATIONS[net.activation]}
        return "MlpPolicy", kwargs
    if target == "lab.nets.NatureCNN":
        instantiate(net, obs_shape=obs_space.shape)
        return "CnnPolicy", {"features_extractor_kwargs": {"features_dim": int(net.features)}}
    kind = target.rsplit(".", 1)[-1]
    raise ConfigError(
        f"agent={agent} builds SB3's policies and cannot express net={kind.lower()} "
        f"({target}): use net=mlp, mlp_tanh or nature_cnn (for sb3_recurrent_ppo, the layers "
        "after its own LSTM, sized by agent.policy_kwargs.lstm_hidden_size)"
    )


class SB3Agent:
    """One SB3 model on the lab's environments; evaluation and logging stay with the runner."""

    def __init__(
        self,
        ctx: AgentContext,
        algo: str,
        num_envs: int,
        lr: float,
        lr_schedule: str = "constant",
        normalize: bool = False,
        policy_kwargs: DictConfig | None = None,
        hyperparams: DictConfig | None = None,
    ):
        from stable_baselines3.common.env_util import make_vec_env

        algorithms = _algorithms()
        if algo not in algorithms:
            raise ConfigError(f"agent.algo={algo}: use one of {', '.join(algorithms)}")
        if lr_schedule not in ("constant", "linear"):
            raise ConfigError(f"agent.lr_schedule={lr_schedule}: use constant or linear")
        extra, hyper = _plain(policy_kwargs), _plain(hyperparams)
        for key in NET_KEYS:
            if key in extra:
                raise ConfigError(
                    f"agent.policy_kwargs.{key}: the net group sets it; choose net= and its "
                    "keys instead (e.g. net.hidden_sizes=[256,256] net.activation=relu)"
                )
        probe = make_env(ctx.env)
        if algo == "dqn":
            require_discrete(probe.action_space, ctx.name, ctx.env.id)
        policy, net_kwargs = sb3_policy(ctx.net, probe.observation_space, ctx.name)
        self.recurrent = algo in RECURRENT
        if self.recurrent:  # MlpLstmPolicy, CnnLstmPolicy: the LSTM's size is a policy_kwarg
            policy = policy.replace("Policy", "LstmPolicy")
        probe.close()
        clip = reward_clip(ctx.env)
        self.envs = make_vec_env(
            lambda: make_env(ctx.env),
            n_envs=num_envs,
            seed=ctx.seed,
            # Outside SB3's Monitor: it logs the game's returns, the algorithm sees clipped ones.
            wrapper_class=None if clip is None else gym.wrappers.ClipReward,
            wrapper_kwargs=None if clip is None else {"min_reward": -clip, "max_reward": clip},
        )
        self.normalizer = None
        if normalize:  # after Monitor too: the logged returns stay the game's own
            from stable_baselines3.common.vec_env import VecNormalize

            # As rl-zoo3 does: the return it normalises by is discounted with the agent's gamma.
            gamma = {"gamma": hyper["gamma"]} if "gamma" in hyper else {}
            self.envs = VecNormalize(self.envs, **gamma)
            self.normalizer = ObsNormalizer(self.envs)
        self.total_steps = ctx.total_steps
        self.model = None  # `step` reads it; SB3 calls the schedules while it builds the model
        self.model = algorithms[algo](
            policy,
            self.envs,
            learning_rate=RunSchedule(self, lr) if lr_schedule == "linear" else lr,
            policy_kwargs=net_kwargs | extra,
            seed=ctx.seed,
            device=ctx.device,
            verbose=0,
            **_parse_schedules(hyper, self),
        )
        self._counts_calls = algo == "dqn"  # SB3's DQN times target updates by its _n_calls
        if algo == "dqn":  # SB3 builds ε's schedule itself: replace it with one on the run
            m = self.model
            m.exploration_schedule = RunSchedule(
                self, m.exploration_initial_eps, m.exploration_final_eps, m.exploration_fraction
            )
        self._started = False
        self._episodes: dict[str, list[float]] = {}

    @property
    def step(self) -> int:
        return 0 if self.model is None else int(self.model.num_timesteps)

    @property
    def updates(self) -> int:
        """Gradient steps as SB3 counts them (PPO: epochs over the rollout)."""
        return int(self.model._n_updates)

    def _callback(self, stop: StopCheck):
        """Records SB3's Monitor episodes; ends ``learn`` after the step in progress on a stop."""
        from stable_baselines3.common.callbacks import BaseCallback

        episodes = self._episodes

        class EpisodeRecorder(BaseCallback):
            def _on_step(self) -> bool:
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        episodes["rollout/episode_return"].append(float(info["episode"]["r"]))
                        episodes["rollout/episode_length"].append(float(info["episode"]["l"]))
                return not stop()

        return EpisodeRecorder()

    def learn(self, budget: int, stop: StopCheck = never) -> dict:
        self._episodes.update({"rollout/episode_return": [], "rollout/episode_length": []})
        self.model.learn(
            max(budget, 1),
            callback=self._callback(stop),
            reset_num_timesteps=not self._started,
            progress_bar=False,
        )
        self._started = True
        metrics: dict = dict(self._episodes)
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("train/") and isinstance(value, int | float):
                metrics[key] = float(value)
        if "rollout/exploration_rate" in self.model.logger.name_to_value:
            metrics["train/epsilon"] = float(
                self.model.logger.name_to_value["rollout/exploration_rate"]
            )
        metrics["counter/updates"] = self.updates
        return metrics

    def policy(self) -> Policy:
        """Greedy; a recurrent policy carries its LSTM state from call to call, starting from
        zeros (the evaluator plays one episode per env, so no episode restarts mid-way)."""
        model, normalizer = self.model, self.normalizer
        lstm: list = [None]

        def act(obs):
            if normalizer is not None:
                obs = normalizer(obs)
            if not self.recurrent:
                return model.predict(obs, deterministic=True)[0]
            starts = np.full(len(obs), lstm[0] is None)
            actions, lstm[0] = model.predict(
                obs, state=lstm[0], episode_start=starts, deterministic=True
            )
            return actions

        return act

    def state_dict(self, resumable: bool) -> dict:
        """Parameters, optimizer, counters and the normalisation statistics (evaluation needs
        them too); SB3's replay buffer is not saved (see resume)."""
        state = {
            "params": self.model.get_parameters(),
            "num_timesteps": self.step,
            "n_updates": self.updates,
        }
        if self._counts_calls:
            state["n_calls"] = int(self.model._n_calls)
        if self.normalizer is not None:
            state["normalizer"] = self.normalizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.set_parameters(state["params"], exact_match=True, device=self.model.device)
        self.model.num_timesteps = state["num_timesteps"]
        self.model._n_updates = state["n_updates"]
        if self._counts_calls:
            self.model._n_calls = state["n_calls"]
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        self._started = True
        log.warning(
            "sb3 resume: weights, optimizer and step counters restored; the replay "
            "buffer and in-flight episodes start empty"
        )

    def nets(self) -> dict[str, torch.nn.Module]:
        """SB3's policy: actor, critic and (RecurrentPPO) their LSTMs, as ``params`` holds it."""
        return {"policy": self.model.policy}

    def close(self) -> None:
        self.envs.close()
