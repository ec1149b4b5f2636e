"""``python -m lab``: Hydra composes the config, the runner trains; bad input is one line."""

import logging
import shutil
import sys
import warnings
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from lab import overrides, sweep
from lab.config import CONF_DIR
from lab.errors import ConfigError, RunFailed

# conf/hydra/launcher/{joblib,ray}.yaml extend the plugins' schemas of the same name on purpose
# (a mistyped key is then an error); Hydra calls that pattern deprecated. Set at import, so
# launcher workers, which import this module to run a job, are quiet too.
warnings.filterwarnings("ignore", message=r"(?s).*automatic_schema_matching")
EXIT_CONFIG = 2
# What a failed job returns to the sweeper. The Optuna sweeper marks a trial whose value is not
# a number as failed and goes on (up to max_failure_rate); a NaN instead crashed the whole
# sweep in its study.tell (hydra-optuna-sweeper 1.3 with optuna 2.10).
FAILED_TRIAL = None
log = logging.getLogger("lab")


def _key_value(arg: str) -> tuple[str, str] | None:
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), value


# Presets that became a pair's tuned settings (conf/tuned/<agent>_<env>.yaml).
MOVED = {
    "experiment=dqn_catch": "agent=dqn env=catch",
    "experiment=dqn_atari": "agent=dqn env=pong",
}


def check_group_choices(argv: list[str]) -> None:
    """``agent=dqnn`` names the options there are, before Hydra prints a screenful."""
    groups = {d.name for d in CONF_DIR.iterdir() if d.is_dir() and d.name != "hydra"}
    given = dict(kv for kv in map(_key_value, argv) if kv)
    # Only a model's defaults list has a dataset: without one, Hydra would refuse `dataset=` in
    # a screenful. Combinations of groups that do compose are checked by lab.config.validate.
    if given.get("dataset", "null") != "null" and given.get("model", "null") == "null":
        raise ConfigError("dataset= needs a generative model: add model=<name>, e.g. model=dcgan")
    storage = given.get("hydra.sweeper.storage", "null")
    if storage != "null":
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: the Optuna sweeper needs optuna < 3, whose database "
            "storage fails with this SQLAlchemy; leave it null (an in-memory study)"
        )
    for key, value in given.items():
        if key not in groups or "(" in value:
            continue  # not a group, or a sweep function such as choice(...) for Hydra to expand
        for choice in value.strip("[]").split(","):  # a list (logger=[a,b]) or a sweep
            if f"{key}={choice}" in MOVED:
                now = MOVED[f"{key}={choice}"]
                raise ConfigError(
                    f"{key}={choice} is gone: `{now}` now takes those settings by itself "
                    f"(conf/tuned/{now.replace('agent=', '').replace(' env=', '_')}.yaml)"
                )
            if choice in ("null", "none" if key == "tuned" else "null"):
                continue  # tuned=none: the agent's defaults even where a tuned file exists
            if not (CONF_DIR / key / f"{choice}.yaml").is_file():
                options = ", ".join(sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml")))
                raise ConfigError(f"{key}={choice}: no such option; choose one of: {options}")


def resume_overrides(argv: list[str]) -> list[str]:
    """``resume=DIR`` continues DIR with its own overrides (yours win) and writes into it."""
    from lab import checkpoint

    values = dict(kv for kv in map(_key_value, argv) if kv)
    run_dir = Path(values["resume"])
    checkpoint.load(run_dir / "checkpoints" / "last.pt", mmap=True)
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    merged: dict[str, str] = {}
    for arg in [*saved, *argv]:
        kv = _key_value(arg)
        if kv is None:
            merged[arg] = arg  # flags such as --multirun pass through
        elif not kv[0].startswith("hydra.run.dir"):
            merged[kv[0]] = arg
    return [*merged.values(), f"hydra.run.dir={run_dir}"]


def _remove_fresh_run_dir(run_dir: Path) -> None:
    """After a config error, leave no half-made run: only Hydra's own files are removed."""
    hydra_files = {".hydra", "lab.log"}
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= hydra_files:
        logging.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)


def task_function(cfg: DictConfig) -> float | None:
    """One run; in a sweep a failure is recorded in the job's summary and the sweep goes on."""
    from lab.runner import run

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            summary = run(cfg, run_dir)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            if not cfg.get("resume"):
                _remove_fresh_run_dir(run_dir)
            sys.exit(EXIT_CONFIG)
        except RunFailed as e:  # the summary says failed; the user reads one line
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        if summary.exit_code:
            sys.exit(summary.exit_code)
        return objective(cfg, summary.metrics)
    sweep.name_wandb_group(cfg, hydra_cfg)
    sweep.share_the_cores(cfg, hydra_cfg)
    try:
        # The same command again on a sweep dir that stopped: finished jobs are kept, the
        # others continue from their checkpoints, and the rest run afresh.
        earlier = sweep.earlier_run(cfg, run_dir)
        if earlier and earlier.get("status") in ("completed", "solved"):
            log.info("job %s: %s already in %s", hydra_cfg.job.num, earlier["status"], run_dir)
            return objective(cfg, earlier["metrics"])
        if earlier is not None:
            with open_dict(cfg):
                cfg.resume = str(run_dir)
            log.info("job %s: continuing %s from its checkpoint", hydra_cfg.job.num, run_dir)
        summary = run(cfg, run_dir)
    except Exception as e:  # isolation: this job failed, the others must still run
        log.error("job %s failed: %s: %s", hydra_cfg.job.num, type(e).__name__, e)
        sweep.record_failure(cfg, run_dir, e)
        return FAILED_TRIAL
    if summary.status == "interrupted":  # Ctrl-C or SIGTERM stops the whole sweep
        sys.exit(summary.exit_code)
    return objective(cfg, summary.metrics) if summary.status != "failed" else FAILED_TRIAL


def objective(cfg: DictConfig, metrics: dict) -> float | None:
    """What a sweeper optimises: ``optimized_metric`` from the run's last evaluation."""
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    return task_function(cfg)


def main() -> None:
    argv = sys.argv[1:]
    try:
        check_group_choices(argv)
        if any(arg.startswith("resume=") and arg != "resume=null" for arg in argv):
            argv = resume_overrides(argv)
        if "--help" not in argv and "-h" not in argv:
            overrides.check_keys_and_types(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.argv = [sys.argv[0], *argv]
    hydra_main()
    if sweep.failed_jobs:
        sys.exit(1)
