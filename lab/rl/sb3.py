"""Stable-Baselines3 algorithms as baselines, driven by the lab's runner like any agent.

SB3 owns its training loop, so ``learn(budget)`` runs ``model.learn`` for one chunk and keeps
SB3's schedules (ε, learning rate) on the whole budget rather than on the chunk. SB3 builds its
own networks: the ``net`` group is translated into its ``policy_kwargs`` (``sb3_policy``), and
a net SB3 cannot express is refused rather than silently replaced.
"""

import logging

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf

from lab.config import instantiate
from lab.errors import ConfigError
from lab.nets import ACTIVATIONS
from lab.rl.agent import AgentContext, Policy
from lab.rl.env import make_env, require_discrete, reward_clip

NET_KEYS = ("net_arch", "activation_fn", "features_extractor_kwargs")  # owned by the net group

log = logging.getLogger("lab")


def _algorithms() -> dict:
    from stable_baselines3 import A2C, DQN, PPO

    return {"dqn": DQN, "a2c": A2C, "ppo": PPO}


def linear(start: float):
    """The zoo's ``lin_<start>``: SB3 calls it with progress remaining, 1 → 0."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


def _plain(node: DictConfig | dict | None) -> dict:
    return (
        OmegaConf.to_container(node, resolve=True)
        if OmegaConf.is_config(node)
        else dict(node or {})
    )


def _parse_schedules(hyperparams: dict) -> dict:
    out = {}
    for key, value in hyperparams.items():
        if isinstance(value, str) and value.startswith("lin_"):
            value = linear(float(value.removeprefix("lin_")))
        out[key] = value
    return out


def sb3_policy(net: DictConfig, obs_space: gym.Space, agent: str) -> tuple[str, dict]:
    """The SB3 policy class and ``policy_kwargs`` that build the net the ``net`` group names.

    ``net=mlp`` (any ``hidden_sizes``, ``activation``) becomes ``MlpPolicy`` with ``net_arch``
    and ``activation_fn`` (for A2C/PPO: policy and value nets of that shape each, as SB3's own
    default); ``net=nature_cnn`` becomes ``CnnPolicy`` with its ``features``. Anything else
    (a recurrent net) is refused.
    """
    target = net._target_
    if target == "lab.nets.MLP":
        instantiate(net, obs_shape=obs_space.shape)  # the lab's own checks of the keys
        kwargs = {"net_arch": list(net.hidden_sizes), "activation_fn": ACTIVATIONS[net.activation]}
        return "MlpPolicy", kwargs
    if target == "lab.nets.NatureCNN":
        instantiate(net, obs_shape=obs_space.shape)
        return "CnnPolicy", {"features_extractor_kwargs": {"features_dim": int(net.features)}}
    kind = target.rsplit(".", 1)[-1]
    raise ConfigError(
        f"agent={agent} builds SB3's feed-forward policies and cannot express net={kind.lower()} "
        f"({target}): use net=mlp, mlp_tanh or nature_cnn"
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
        policy_kwargs: DictConfig | None = None,
        hyperparams: DictConfig | None = None,
    ):
        from stable_baselines3.common.env_util import make_vec_env

        algorithms = _algorithms()
        if algo not in algorithms:
            raise ConfigError(f"agent.algo={algo}: use one of {', '.join(algorithms)}")
        if lr_schedule not in ("constant", "linear"):
            raise ConfigError(f"agent.lr_schedule={lr_schedule}: use constant or linear")
        extra = _plain(policy_kwargs)
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
        hp = _parse_schedules(_plain(hyperparams))
        self.model = algorithms[algo](
            policy,
            self.envs,
            learning_rate=linear(lr) if lr_schedule == "linear" else lr,
            policy_kwargs=net_kwargs | extra,
            seed=ctx.seed,
            device=ctx.device,
            verbose=0,
            **hp,
        )
        self.total_steps = ctx.total_steps
        self._counts_calls = algo == "dqn"  # SB3's DQN times target updates by its _n_calls
        self._started = False
        self._episodes: dict[str, list[float]] = {}
        self._patch_progress()

    def _patch_progress(self) -> None:
        """Chunked ``learn`` calls would restart SB3's schedules; pin them to the whole budget."""
        model, setup = self.model, self.model._setup_learn

        def setup_learn(total_timesteps, *args, **kwargs):
            out = setup(total_timesteps, *args, **kwargs)
            model._total_timesteps = self.total_steps
            return out

        model._setup_learn = setup_learn

    @property
    def step(self) -> int:
        return int(self.model.num_timesteps)

    @property
    def updates(self) -> int:
        """Gradient steps as SB3 counts them (PPO: epochs over the rollout)."""
        return int(self.model._n_updates)

    def _callback(self):
        from stable_baselines3.common.callbacks import BaseCallback

        episodes = self._episodes

        class EpisodeRecorder(BaseCallback):
            def _on_step(self) -> bool:
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        episodes["rollout/episode_return"].append(float(info["episode"]["r"]))
                        episodes["rollout/episode_length"].append(float(info["episode"]["l"]))
                return True

        return EpisodeRecorder()

    def learn(self, budget: int) -> dict:
        self._episodes.update({"rollout/episode_return": [], "rollout/episode_length": []})
        self.model.learn(
            max(budget, 1),
            callback=self._callback(),
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
        model = self.model

        def act(obs):
            return model.predict(obs, deterministic=True)[0]

        return act

    def state_dict(self, resumable: bool) -> dict:
        """Parameters, optimizer and counters; SB3's replay buffer is not saved (see resume)."""
        state = {
            "params": self.model.get_parameters(),
            "num_timesteps": self.step,
            "n_updates": self.updates,
        }
        if self._counts_calls:
            state["n_calls"] = int(self.model._n_calls)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.set_parameters(state["params"], exact_match=True, device=self.model.device)
        self.model.num_timesteps = state["num_timesteps"]
        self.model._n_updates = state["n_updates"]
        if self._counts_calls:
            self.model._n_calls = state["n_calls"]
        self._started = True
        log.warning(
            "sb3 resume: weights, optimizer and step counters restored; the replay "
            "buffer and in-flight episodes start empty"
        )

    def close(self) -> None:
        self.envs.close()
