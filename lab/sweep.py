"""What a sweep adds to single runs: failed jobs on record, a shared W&B group, a last word."""

import json
import logging
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from lab import checkpoint
from lab.compute import available_cores
from lab.errors import ConfigError
from lab.summary import Summary, read_summaries, write_summary

log = logging.getLogger("lab")

failed_jobs: list[Path] = []  # filled by SweepSummary at the end of a sweep, read by the CLI


def share_the_cores(cfg: DictConfig, hydra_cfg) -> None:
    """``threads: null`` in a parallel sweep means this job's share of the cores."""
    if cfg.get("threads") is None:
        threads = threads_per_job(hydra_cfg.launcher)
        if threads is not None:
            with open_dict(cfg):
                cfg.threads = threads


def name_wandb_group(cfg: DictConfig, hydra_cfg) -> None:
    """W&B runs of one sweep share a group named after it (unless logger.wandb.group is set)."""
    wandb = cfg.logger.get("wandb")
    if wandb is None or wandb.group:
        return
    parts = Path(hydra_cfg.sweep.dir).parts
    name = "_".join(parts[1:] if parts and parts[0] == "runs" else parts)
    with open_dict(cfg):
        wandb.group = name


def threads_per_job(launcher: DictConfig) -> int | None:
    """The torch threads a job of a parallel sweep gets when ``threads`` is null: its share of
    the cores, not all of them. Two image runs with every core's threads each on 2 cores ran at
    ~3 updates/s against ~50 alone. None where jobs run one at a time (the basic launcher).

    joblib: cores / n_jobs (-1: a job per core); Ray: the CPUs a job reserves
    (``ray.remote.num_cpus``); submitit (slurm, local): ``cpus_per_task``.
    """
    target = launcher.get("_target_", "")
    if "Joblib" in target:
        cores = available_cores()
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else cores + 1 + launcher.n_jobs
        return max(1, cores // max(1, n_jobs))
    if "Ray" in target:
        return max(1, int(launcher.ray.remote.get("num_cpus") or 1))
    if "Submitit" in target or "Slurm" in target or "Local" in target:
        return max(1, int(launcher.get("cpus_per_task") or 1))
    return None


def earlier_run(cfg: DictConfig, run_dir: Path) -> dict | None:
    """What this job's directory holds from an earlier try of the same sweep command.

    ``None`` when there is nothing to continue (a new job, or one that died before its first
    checkpoint); else the saved summary (``{}`` if there is none yet). The checkpoint's config
    must be this job's: another command pointed at the same sweep dir is refused.
    """
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    saved = checkpoint.load(last, mmap=True)["config"]
    current = OmegaConf.to_container(cfg, resolve=True)
    if {**saved, "resume": None} != {**current, "resume": None}:
        changed = sorted(k for k in current.keys() | saved.keys() if saved.get(k) != current.get(k))
        raise ConfigError(
            f"{run_dir} holds a run of another job (its {', '.join(changed)} differ): rerun the "
            "sweep's own command to continue it, or choose another hydra.sweep.dir"
        )
    summary = run_dir / "summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """A ``failed`` summary.json for a job that died before the runner could write one."""
    path = run_dir / "summary.json"
    if path.exists():  # the runner got far enough to write its own
        return
    rl = cfg.get("agent") is not None
    section = cfg.get("agent") if rl else cfg.get("model")
    where = cfg.get("env") if rl else cfg.get("dataset")
    summary = Summary(
        status="failed",
        family="rl" if rl else "generative",
        algo=section.get("name", "?") if section is not None else "?",
        task=(where.get("id") or where.get("name", "?")) if where is not None else "?",
        seed=cfg.get("seed", 0),
        device=str(cfg.get("device", "?")),
        steps=0,
        wall_seconds=0.0,
        metrics={},
        best={},
        threshold={"metric": None, "value": None, "reached_step": None, "reached_seconds": None},
        error=f"{type(error).__name__}: {error}",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(summary, path)


class SweepSummary(Callback):
    """At the end of a sweep: how many runs ended how, which failed, and the report command."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        summaries = read_summaries(root)
        statuses: dict[str, int] = {}
        for _, summary in summaries:
            statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
        counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        log.info("sweep %s: %d runs (%s)", root, len(summaries), counts or "none finished")
        for path, summary in summaries:
            if summary["status"] == "failed":
                failed_jobs.append(path.parent)
                log.error("  failed: %s: %s", path.parent, summary.get("error", "?"))
        log.info("table and plots: python -m lab.report %s", root)
