"""Checks on the composed config that Hydra cannot make, each a one-line ConfigError."""

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lab.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the shipped Hydra configs
# `${add:${env.length},2}`: a sum in a config (conf/tuned/a2c_tmaze.yaml sizes the rollout to
# the maze). Registered on import: everything that composes lab's configs imports this module.
OmegaConf.register_new_resolver("add", lambda *numbers: sum(numbers), replace=True)


def tuned_settings(cfg: DictConfig) -> str | None:
    """Which settings an RL run's agent took: its ``conf/tuned/<agent>_<env>.yaml`` or defaults.

    ``conf/config.yaml`` merges that file, when it exists, through the optional default
    ``tuned: ${agent}_${env}`` (``tuned=none`` skips it); this reads Hydra's choice back so a
    run can say what it used. None outside a Hydra run and for generative runs.
    """
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("agent") is None or not HydraConfig.initialized():
        return None
    choices = HydraConfig.get().runtime.choices
    defaults = f"agent={choices.get('agent')} defaults"
    if choices.get("tuned") == "none":
        return f"{defaults} (tuned=none)"
    tuned = CONF_DIR / "tuned" / f"{choices.get('tuned')}.yaml"
    if tuned.is_file():
        return str(tuned.relative_to(CONF_DIR.parent))
    return f"{defaults} (no {tuned.relative_to(CONF_DIR.parent)})"


def validate(cfg: DictConfig) -> None:
    """Every check that spans config groups, once, before anything is built.

    A key that only one object reads is checked by that object when it is built (a net's
    sizes, an agent's γ); what depends on the combination of groups is checked here.
    """
    agent, model = cfg.get("agent"), cfg.get("model")
    if agent is not None and model is not None:
        raise ConfigError(
            "both agent and model are set: choose an RL agent= or a generative model="
        )
    if agent is None and model is None:
        raise ConfigError("nothing to train: set agent=<name> (e.g. agent=dqn) or model=<name>")
    if agent is not None:
        _validate_rl(cfg)
    else:
        _validate_generative(cfg)
    for key, value in _learning_rates(cfg):
        if not value > 0:
            raise ConfigError(f"{key}={value}: a learning rate must be > 0")
    for key in ("eval.episodes", "eval.interval", "log_interval", "checkpoint.interval"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value}: must be a positive integer")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed}: must be a non-negative integer")


def _validate_rl(cfg: DictConfig) -> None:
    if cfg.get("env") is None:
        raise ConfigError("agent is set but env is not: add env=<name>, e.g. env=cartpole")
    if cfg.get("net") is None:
        raise ConfigError("agent is set but net is not: add net=<name>, e.g. net=mlp")
    if cfg.get("dataset") is not None:
        raise ConfigError(
            f"dataset={cfg.dataset.name} is for generative models, and agent={cfg.agent.name} "
            "trains on env: drop dataset=, or choose model=<name> instead of agent="
        )
    _require_steps("agent", cfg.agent.total_steps)


def _validate_generative(cfg: DictConfig) -> None:
    name = cfg.model.name
    if cfg.get("dataset") is None:
        raise ConfigError(f"model={name} needs a dataset: add dataset=<name>, e.g. dataset=digits")
    if cfg.get("env") is not None:
        raise ConfigError(
            f"model={name} trains on dataset={cfg.dataset.name}; env ({cfg.env.id}) is for RL "
            "agents: drop env=, or choose agent=<name> instead of model="
        )
    if cfg.get("net") is not None:
        raise ConfigError(
            f"model={name} builds its own conv nets; net ({cfg.net._target_}) is for RL agents: "
            "drop net= (model.width sizes the nets)"
        )
    _require_steps("model", cfg.model.total_steps)


def _require_steps(group: str, steps) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"{group}.total_steps={steps}: must be a positive integer")


def _learning_rates(cfg: DictConfig) -> Iterator[tuple[str, float]]:
    for group in ("agent", "model"):
        section = cfg.get(group)
        if section is None:
            continue
        for key, value in section.items():
            if (key == "lr" or key.endswith("_lr")) and value is not None:
                yield f"{group}.{key}", value


def require_positive(group: str = "agent", /, **values: float) -> None:
    """Each ``<group>.<key>`` given must be > 0; the error names the first that is not."""
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{group}.{key}={value}: must be > 0")


# What users of other libraries (SB3, PyTorch) call a key that lab spells its own way.
ALIASES = {
    "learning_rate": "lr",
    "ent_coef": "entropy_coef",
    "vf_coef": "value_coef",
    "n_envs": "num_envs",
    "n_steps": "t_max",
    "n_timesteps": "total_steps",
    "timesteps": "total_steps",
    "steps": "total_steps",
    "tau": "target_tau",
    "target_update_interval": "target_interval",
    "exploration_fraction": "eps_fraction",
    "exploration_final_eps": "eps_end",
}


def closest(name: str, names: Iterable[str]) -> list[str]:
    """The keys a misspelled ``name`` most likely meant: its lab spelling, then look-alikes."""
    names = list(names)
    alias = ALIASES.get(name)
    first = [alias] if alias in names else []
    looks = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return first + [c for c in looks if c != alias]


def check_keywords(
    target: Callable, group: str, given: Iterable[str], supplied: Iterable[str] = ()
) -> None:
    """Every ``<group>.<key>`` given is a parameter of ``target``: a key the object would not
    take (``+agent.learning_rate=...``) is one line naming the closest ones, not a traceback.
    ``supplied`` are the parameters the caller fills itself (an agent's ``ctx``)."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    params = {name: p for name, p in params.items() if name not in supplied}
    for key in given:
        if key not in params:
            close = closest(key, params)
            hint = " or ".join(f"{group}.{c}" for c in close)
            hint = f"did you mean {hint}?" if close else f"it takes: {', '.join(params)}"
            raise ConfigError(f"{group}.{key}: {target.__name__} takes no such key; {hint}")


def instantiate(node: DictConfig, group: str = "", **kwargs):
    """``hydra.utils.instantiate`` that checks the node's keys against its target first and
    lets a ConfigError raised by the target through."""
    import hydra
    from hydra.errors import InstantiationException

    target = hydra.utils.get_object(node._target_) if "_target_" in node else None
    if target is not None:
        keys = [k for k in node if not str(k).startswith("_")]
        check_keywords(target, group or _group_of(node), keys, supplied=kwargs)
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise


def _group_of(node: DictConfig) -> str:
    """``net``, ``dataset``, ``agent.optimizer``: where the node sits in the config."""
    return node._get_full_key(None) or "config"


def compose_with_options(argv: list[str], options: dict[str, int], *base: str) -> DictConfig:
    """A tool's command line: ``name=int`` for its own ``options`` (updated in place), every
    other ``key=value`` a config override after ``base`` (``python -m lab.rl.bench``)."""
    from hydra import compose, initialize_config_dir

    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in options:
            options[key] = int(value)
        else:
            overrides.append(arg)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", [*base, *overrides])
