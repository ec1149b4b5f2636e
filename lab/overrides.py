"""Command-line overrides checked before Hydra runs, so a typo is one line, not a screenful.

Hydra reports a misspelled key as seven lines that suggest ``+key=...``, which then builds an
object that rejects the key with a traceback. Here every ``key=value`` is checked against the
config its group choices compose: an unknown key names the closest ones, and a value whose type
cannot replace the default (``agent.lr=abc``) is refused. Keys added with ``+`` are checked by
the object they reach (``lab.config.check_keywords``).
"""

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from lab.config import CONF_DIR, closest
from lab.errors import ConfigError

_ABSENT = object()


def parse(argv: list[str]) -> list:
    """Hydra's own parse of the overrides (flags such as ``-m`` left out)."""
    try:
        return OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except HydraException as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"cannot read the overrides: {first}") from None


def check_keys_and_types(argv: list[str]) -> None:
    """Each ``key=value`` names an existing key and keeps the type of a number or a switch;
    ``+key`` adds a key that is not there yet, ``~key`` removes one that is. A sweep over
    groups is checked in every combination of its choices."""
    overrides = parse(argv)
    groups = [o for o in overrides if _is_group(o.key_or_group)]
    values = [o for o in overrides if not (o in groups or o.key_or_group.startswith("hydra"))]
    combos = _combinations(groups)
    for choices in combos:
        cfg = _compose(choices)
        for o in values:
            try:
                _check(cfg, o)
            except ConfigError as e:
                where = f" (with {' '.join(choices)})" if len(combos) > 1 else ""
                raise ConfigError(f"{e}{where}") from None
    if len(combos) > 1:  # Hydra first composes the config without the sweep, to set it up
        base = _compose([o.input_line for o in groups if not o.is_sweep_override()])
        for o in values:
            plain = not (o.is_add() or o.is_force_add() or o.is_delete())
            if plain and OmegaConf.select(base, o.key_or_group, default=_ABSENT) is _ABSENT:
                raise ConfigError(
                    f"{o.key_or_group}: the default config has no such key, and Hydra composes "
                    f"it before the sweep: write ++{o.input_line} (add or override)"
                )


def _compose(choices: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=choices)


def _combinations(groups: list) -> list[list[str]]:
    """Every combination of the group choices (``agent=dqn,a3c env=cartpole``: two)."""
    combos: list[list[str]] = [[]]
    for o in groups:
        if not o.is_sweep_override():
            options = [o.input_line]
        elif o.value_type.name == "SIMPLE_CHOICE_SWEEP" or o.value_type.name == "CHOICE_SWEEP":
            prefix = o.input_line.split("=", 1)[0]
            options = [f"{prefix}={choice}" for choice in o.sweep_string_iterator()]
        else:
            return []  # glob() or range() over options: Hydra checks each job itself
        combos = [[*combo, option] for combo in combos for option in options]
    return combos


def _check(cfg: DictConfig, o) -> None:
    key = o.key_or_group
    current = OmegaConf.select(cfg, key, default=_ABSENT)
    if o.is_force_add():
        return  # ++key: add or override, whichever applies
    if o.is_add():
        if current is not _ABSENT:
            raise ConfigError(f"+{key}: {key} exists already; set it without the +: {key}=...")
        return  # checked by the object it reaches (lab.config.check_keywords)
    if current is _ABSENT:
        what = f"~{key}" if o.is_delete() else key
        raise ConfigError(f"{what}: no such key{_suggest(cfg, key)}")
    if not o.is_delete() and not o.is_sweep_override():
        _check_type(key, current, o.value())


def _is_group(key: str) -> bool:
    return ("." not in key and (CONF_DIR / key).is_dir()) or key.startswith("hydra/")


def _suggest(cfg: DictConfig, key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return f"; {parent} has no keys to set"
    names = [str(k) for k in node]
    for child in list(names):  # one level down too: SB3's own keys sit in agent.hyperparams
        if isinstance(node[child], DictConfig) and leaf in node[child]:
            names.append(f"{child}.{leaf}")
    nested = [n for n in names if n.endswith(f".{leaf}")]
    close = nested or closest(leaf, names)
    prefix = f"{parent}." if parent else ""
    if close:
        return "; did you mean " + " or ".join(f"{prefix}{c}" for c in close) + "?"
    return f"; the keys of {parent or 'the config'} are: {', '.join(sorted(names))}"


def _check_type(key: str, current, value) -> None:
    """A number stays a number and a switch a switch (null is always allowed)."""
    if value is None or current is None:
        return
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value}: expected true or false")
    elif isinstance(current, int | float) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ConfigError(f"{key}={value}: expected a number (the default is {current})")
