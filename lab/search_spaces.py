"""Conditional Optuna search spaces, for hydra-optuna-sweeper's ``custom_search_space`` hook.

A flat ``hydra.sweeper.params`` grid cannot say "the transformer's depth only when the net is a
transformer". The sweeper calls ``hydra.sweeper.custom_search_space`` (a dotted path to one of
the functions here) as ``f(cfg, trial)`` for every trial; whatever it suggests becomes the
trial's overrides, ``<name>=<value>``. So the parameter names are override keys: ``net`` picks
the config group option, ``net.<key>`` that net's sizes. Lists are suggested as strings
(``"[64,64]"``) because Optuna's categorical choices must be scalars; Hydra parses them back.
"""

from collections.abc import Callable

from omegaconf import DictConfig

from lab.config import CONF_DIR


def _mlp(trial) -> None:
    trial.suggest_categorical("net.hidden_sizes", ["[64]", "[64,64]", "[128,128]", "[256,256]"])


def _recurrent(trial) -> None:  # lstm and gru share the names, so their sizes compare in TPE
    trial.suggest_categorical("net.hidden_size", [32, 64, 128, 256])
    trial.suggest_categorical("net.encoder_sizes", ["[32]", "[64]", "[128]"])


def _transformer(trial) -> None:
    trial.suggest_categorical("net.width", [32, 64, 128])  # each a multiple of every heads
    trial.suggest_categorical("net.heads", [1, 2, 4])
    trial.suggest_int("net.depth", 1, 3)
    trial.suggest_categorical("net.context", [4, 8, 16, 32])
    trial.suggest_categorical("net.ff_size", [64, 128, 256])
    trial.suggest_categorical("net.encoder_sizes", ["[32]", "[64]", "[128]"])


# Each net kind a search may pick (its conf/net/<kind>.yaml) and the sizes it takes.
NET_SIZES: dict[str, Callable] = {
    "mlp": _mlp,
    "lstm": _recurrent,
    "gru": _recurrent,
    "transformer": _transformer,
}


def net_kinds() -> list[str]:
    """The kinds in ``NET_SIZES`` that this checkout ships a ``conf/net`` file for."""
    return [kind for kind in NET_SIZES if (CONF_DIR / "net" / f"{kind}.yaml").is_file()]


def net_architecture(cfg: DictConfig, trial) -> None:
    """Pick a net kind, then that kind's own sizes (``hparams_search=net_cartpole_novel``).

    ``cfg`` is the sweep's config (unused: the space is the same for every agent that takes
    every kind); ``trial`` an ``optuna.trial.Trial``.
    """
    kind = trial.suggest_categorical("net", net_kinds())
    NET_SIZES[kind](trial)
