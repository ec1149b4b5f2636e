"""Evaluates a trained run without training: ``python -m lab.eval <run dir> episodes=20``.

Builds the run's task as the runner does, loads ``checkpoints/best.pt`` (``checkpoint=last``
for the final weights), runs the task's own ``evaluate`` (the code behind training's ``eval/*``
rows), prints the metrics and appends a row to ``<run dir>/evals.jsonl``. Media (an RL episode
video with ``video=true``, a generative run's sample grids) go to ``media/eval_seed<seed>/``, so
the training's own files are never overwritten.

``seed=S`` evaluates as a run of seed S does: on the same episodes (RL envs reset from seed
S + 1,000,000) or latents (generative). The default, the run's own seed, reproduces the run's
own evaluations to the bit on the same device.

Options: ``checkpoint=best|last``, ``seed=``, ``device=``, ``precision=``; RL runs
``episodes=N``, ``video=true|false``; generative runs ``fid.samples=N``, ``fid.kid_subsets=N``,
``fid.kid_subset_size=N``. Other config keys are refused: they would change what was trained.

``lab.sample`` shares the run loading and option parsing below (``run_config``,
``run_checkpoint``, ``read_command``).
"""

import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from lab import checkpoint
from lab.compute import Compute, resolve_device, seed_everything, set_threads
from lab.config import validate
from lab.errors import ConfigError
from lab.runner import build_task

USAGE = "usage: python -m lab.eval <run dir> [checkpoint=best|last] [episodes=N] [seed=N] ..."


def run_config(run_dir: Path) -> DictConfig:
    """The config a run was composed with (Hydra's ``.hydra/config.yaml``)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no .hydra/config.yaml)")
    return OmegaConf.load(config_file)


def run_checkpoint(run_dir: Path, which: str) -> tuple[dict, str]:
    """A run's ``which`` checkpoint (``best`` or ``last``) and the name of the one loaded:
    ``best`` falls back to ``last`` before the first evaluation has written ``best.pt``."""
    if which == "best" and not (run_dir / "checkpoints" / "best.pt").is_file():
        which = "last"
    return checkpoint.load(run_dir / "checkpoints" / f"{which}.pt"), which


def read_command(
    argv: list[str], parsers: dict[str, Callable[[str], object]], usage: str
) -> tuple[Path, dict[str, object]]:
    """``<run dir> key=value ...``: the run directory and each option given, parsed; an unknown
    option or a value its parser refuses (with a ``ValueError``) is a one-line ConfigError."""
    if not argv or "=" in argv[0]:
        raise ConfigError(usage)
    given = {}
    for arg in argv[1:]:
        key, sep, text = arg.partition("=")
        if not sep or key not in parsers:
            raise ConfigError(f"{arg}: unknown option; use {', '.join(f'{k}=' for k in parsers)}")
        try:
            given[key] = parsers[key](text)
        except ValueError as e:
            raise ConfigError(f"{arg}: {e}") from None
    return Path(argv[0]), given


def positive_int(text: str) -> int:
    """An option's parser: a count (``n=``, ``episodes=``)."""
    if not text.isdigit() or int(text) < 1:
        raise ValueError("must be a positive integer")
    return int(text)


def non_negative_int(text: str) -> int:
    """An option's parser: a seed."""
    if not text.isdigit():
        raise ValueError("must be a non-negative integer")
    return int(text)


def switch(text: str) -> bool:
    """An option's parser: ``true`` or ``false``."""
    if text not in ("true", "false"):
        raise ValueError("expected true or false")
    return text == "true"


def checkpoint_name(text: str) -> str:
    """An option's parser: which of a run's checkpoints."""
    if text not in ("best", "last"):
        raise ValueError("use best or last")
    return text


class Option(NamedTuple):
    """A ``key=value`` of ``lab.eval``: the config key it sets and the runs it applies to."""

    key: str | None  # None: not a config key (checkpoint=)
    parse: Callable[[str], object]
    family: str | None = None  # "rl" or "generative"; None: every run


OPTIONS = {
    "checkpoint": Option(None, checkpoint_name),
    "seed": Option("seed", non_negative_int),
    "device": Option("device", str),
    "precision": Option("precision", str),
    "episodes": Option("eval.episodes", positive_int, "rl"),
    "video": Option("eval.video", switch, "rl"),
    "fid.samples": Option("fid.samples", positive_int, "generative"),
    "fid.kid_subsets": Option("fid.kid_subsets", positive_int, "generative"),
    "fid.kid_subset_size": Option("fid.kid_subset_size", positive_int, "generative"),
}


def parse(argv: list[str]) -> tuple[Path, dict[str, object]]:
    """The run directory and the options, checked and converted; ``checkpoint=best`` by default."""
    run_dir, given = read_command(argv, {name: o.parse for name, o in OPTIONS.items()}, USAGE)
    return run_dir, {"checkpoint": "best"} | given


def configure(cfg: DictConfig, options: dict[str, object]) -> str:
    """Set the options' config keys in ``cfg``; returns the run's family."""
    family = "generative" if cfg.get("model") is not None else "rl"
    for name, value in options.items():
        option = OPTIONS[name]
        if option.family not in (None, family):
            mine = ", ".join(f"{n}=" for n, o in OPTIONS.items() if o.family in (None, family))
            raise ConfigError(f"{name}= is for {option.family} runs, not {family} ones; use {mine}")
        if option.key is not None:
            OmegaConf.update(cfg, option.key, value)
    return family


def _settings(cfg: DictConfig, family: str) -> dict[str, object]:
    """The value each option of the run's family had in this evaluation."""
    return {
        name: OmegaConf.select(cfg, o.key)
        for name, o in OPTIONS.items()
        if o.key is not None and o.family in (None, family)
    }


def evaluate(run_dir: Path, options: dict[str, object]) -> dict:
    """Evaluate the run's checkpoint as training's evaluations do; returns the evals.jsonl row."""
    cfg = run_config(run_dir)
    state, which = run_checkpoint(run_dir, str(options["checkpoint"]))
    family = configure(cfg, options)
    validate(cfg)
    # As lab.runner.run sets them up, so the numbers match the run's own evaluations.
    set_threads(cfg.threads)
    compute = Compute(resolve_device(cfg.device), cfg.precision)
    seed_everything(cfg.seed)
    task = build_task(cfg, compute)
    try:
        logging.disable(logging.WARNING)  # best.pt has no replay buffer: a resume's warning
        task.load_state_dict(state["task"])
        logging.disable(logging.NOTSET)
        metrics, media = task.evaluate(run_dir / "media" / f"eval_seed{cfg.seed}")
    finally:
        logging.disable(logging.NOTSET)
        task.close()
    return {
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "checkpoint": which,
        "step": task.step,
        "run": f"{task.algo} on {task.name}",
        "options": _settings(cfg, family) | {"device": str(compute.device)},
        "metrics": metrics,
        "media": {k: str(p.relative_to(run_dir)) for k, p in media.items()},
    }


def _number(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def print_row(row: dict, evals_file: Path) -> None:
    """One line per metric, then ``mean ± std`` of each pair (the return, KID)."""
    print(
        f"{row['run']}: {row['checkpoint']}.pt at step {row['step']}, seed {row['options']['seed']}"
    )
    metrics = row["metrics"]
    lines = [(key, _number(value)) for key, value in metrics.items()]
    for key, mean in metrics.items():
        stem = key.removesuffix("_mean")
        if stem != key and f"{stem}_std" in metrics:
            lines.append((stem, f"{_number(mean)} ± {_number(metrics[f'{stem}_std'])}"))
    width = max(len(key) for key, _ in lines) + 2
    for key, text in lines:
        print(f"  {key:<{width}}{text}")
    for path in row["media"].values():
        print(f"  wrote {path}")
    print(f"  appended to {evals_file}")


def main(argv: list[str] | None = None) -> None:
    try:
        run_dir, options = parse(sys.argv[1:] if argv is None else argv)
        row = evaluate(run_dir, options)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    evals_file = run_dir / "evals.jsonl"
    with evals_file.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print_row(row, evals_file)


if __name__ == "__main__":
    main()
