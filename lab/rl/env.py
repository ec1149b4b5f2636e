"""Build Gymnasium environments from the ``env`` config group, one way for every caller."""

from collections.abc import Callable

import gymnasium as gym
from gymnasium.vector import SyncVectorEnv, VectorEnv
from omegaconf import DictConfig

import envs  # noqa: F401  (registers lab/Catch-v0 and friends)
from lab.errors import ConfigError


def _register_ale() -> None:
    try:
        import ale_py
    except ImportError:
        raise ConfigError(
            "Atari envs need ale-py: pip install -c constraints.txt -e '.[atari]'"
        ) from None
    gym.register_envs(ale_py)


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id``, or a ConfigError with Gymnasium's suggestion."""
    if env_id.startswith("ALE/"):
        _register_ale()
    try:
        return gym.spec(env_id)
    except gym.error.Error as e:
        raise ConfigError(f"env.id={env_id}: {e}; see gymnasium.pprint_registry()") from None


def make_env(cfg: DictConfig, render_mode: str | None = None) -> gym.Env:
    """One environment with the config's wrappers (Atari preprocessing and frame stacking;
    ``env.frame_stack`` > 1 stacks vector observations too)."""
    check_env_id(cfg.id)
    kwargs = dict(cfg.get("kwargs") or {})
    try:
        env = gym.make(cfg.id, render_mode=render_mode, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise ConfigError(f"env.id={cfg.id}: {e}") from None
    if cfg.get("atari"):
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=30, frame_skip=cfg.frame_skip, screen_size=84, grayscale_obs=True
        )
        env = gym.wrappers.FrameStackObservation(env, cfg.frame_stack)
    elif frame_stack(cfg) > 1:  # (k, obs): an MLP flattens it; the first frame is repeated
        env = gym.wrappers.FrameStackObservation(env, frame_stack(cfg))
    return env


def frame_stack(cfg: DictConfig) -> int:
    """``env.frame_stack``: how many recent observations an observation holds (1: the last)."""
    stack = cfg.get("frame_stack")
    if stack is None:
        return 1
    if not isinstance(stack, int) or isinstance(stack, bool) or stack < 1:
        raise ConfigError(f"env.frame_stack={stack}: must be a positive integer (1: no stacking)")
    return stack


def make_vec_env(cfg: DictConfig, num_envs: int, train: bool = False) -> VectorEnv:
    """``num_envs`` copies; Gymnasium's native vector env when the id has one (CartPole: ~10x).

    Training envs (``train``) record episode statistics (``lab.rl.agent.book_episodes`` reads
    them) and then clip rewards to ``env.train_reward_clip`` when it is set, so every agent
    learns from clipped rewards while the logged returns stay the game's own.
    """
    spec = check_env_id(cfg.id)
    if spec.vector_entry_point is not None and not cfg.get("atari") and frame_stack(cfg) == 1:
        envs = gym.make_vec(
            cfg.id,
            num_envs,
            vectorization_mode="vector_entry_point",
            **dict(cfg.get("kwargs") or {}),
        )
    else:
        factories: list[Callable[[], gym.Env]] = [lambda: make_env(cfg) for _ in range(num_envs)]
        envs = SyncVectorEnv(factories)
    if not train:
        return envs
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    clip = reward_clip(cfg)
    if clip is not None:
        envs = gym.wrappers.vector.ClipReward(envs, -clip, clip)
    return envs


def reward_clip(cfg: DictConfig) -> float | None:
    """``env.train_reward_clip``: training rewards are clipped to [-c, c] (Atari: 1)."""
    clip = cfg.get("train_reward_clip")
    if clip is not None and not clip > 0:
        raise ConfigError(f"env.train_reward_clip={clip}: must be > 0, or null for no clipping")
    return clip


def require_discrete(space: gym.Space, algo: str, env_id: str) -> int:
    """The number of actions, or a ConfigError for continuous (or other) action spaces."""
    if not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"agent={algo} needs discrete actions but env.id={env_id} has {space}; "
            "pick a discrete env (e.g. env=cartpole) or an algorithm for continuous control"
        )
    return int(space.n)
