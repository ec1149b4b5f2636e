"""Stable-Baselines3 algorithms as baselines, driven by the lab's runner like any agent.

SB3 owns its training loop, so ``learn(budget)`` runs ``model.learn`` for one chunk and keeps
SB3's schedules (ε, learning rate) on the whole budget rather than on the chunk.
"""

import logging

from omegaconf import DictConfig, OmegaConf

from lab.compute import Compute
from lab.config import instantiate
from lab.errors import ConfigError
from lab.rl.env import make_env

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


class SB3Agent:
    """One SB3 model on the lab's environments; evaluation and logging stay with the runner."""

    def __init__(
        self,
        env_cfg: DictConfig,
        net_cfg: DictConfig,
        compute: Compute,
        seed: int,
        algo: str,
        name: str,
        total_steps: int,
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
        if algo == "dqn":
            from lab.rl.env import require_discrete

            probe = make_env(env_cfg)
            require_discrete(probe.action_space, name, env_cfg.id)
            probe.close()
        policy = self._policy(net_cfg, env_cfg)
        self.envs = make_vec_env(lambda: make_env(env_cfg), n_envs=num_envs, seed=seed)
        hp = _parse_schedules(_plain(hyperparams))
        self.model = algorithms[algo](
            policy,
            self.envs,
            learning_rate=linear(lr) if lr_schedule == "linear" else lr,
            policy_kwargs=_plain(policy_kwargs),
            seed=seed,
            device=compute.device,
            verbose=0,
            **hp,
        )
        self.total_steps = total_steps
        self._started = False
        self._episodes: dict[str, list[float]] = {}
        self._patch_progress()

    @staticmethod
    def _policy(net_cfg: DictConfig, env_cfg: DictConfig) -> str:
        """SB3 builds its own nets: the ``net`` group only picks MLP or CNN (and is checked)."""
        if net_cfg._target_.endswith("NatureCNN"):
            probe = make_env(env_cfg)
            instantiate(net_cfg, obs_shape=probe.observation_space.shape)
            probe.close()
            return "CnnPolicy"
        return "MlpPolicy"

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
        return metrics

    def act(self, obs):
        return self.model.predict(obs, deterministic=True)[0]

    def state_dict(self, include_buffer: bool = True) -> dict:
        """Parameters, optimizer and counters; SB3's replay buffer is not saved (see resume)."""
        return {
            "params": self.model.get_parameters(),
            "num_timesteps": self.step,
            "n_updates": int(getattr(self.model, "_n_updates", 0)),
            "n_calls": int(getattr(self.model, "_n_calls", 0)),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.set_parameters(state["params"], exact_match=True, device=self.model.device)
        self.model.num_timesteps = state["num_timesteps"]
        self.model._n_updates = state["n_updates"]
        if hasattr(self.model, "_n_calls"):
            self.model._n_calls = state["n_calls"]
        self._started = True
        log.warning(
            "sb3 resume: weights, optimizer and step counters restored; the replay "
            "buffer and in-flight episodes start empty"
        )

    def close(self) -> None:
        self.envs.close()
