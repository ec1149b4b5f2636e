"""Where metrics go: ``metrics.jsonl`` always, Weights & Biases when ``logger=wandb``."""

import json
import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig

from lab.errors import ConfigError

log = logging.getLogger("lab")

WANDB_MODES = ("offline", "online", "disabled")


class MetricsFile:
    """``metrics.jsonl``: one JSON object a row, ``{"step", "time", ...}``, flushed per row."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def truncate_after(path: Path, step: int) -> None:
        """Drop rows logged after ``step`` (a run killed past its last checkpoint), atomically."""
        if not path.exists():
            return
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step
        ]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)


class WandbLogger:
    """A W&B run in ``<run dir>/wandb``; offline by default so it never prompts or blocks."""

    def __init__(self, cfg: DictConfig, run_dir: Path, config: dict, run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            job_type=cfg.job_type,
            name=cfg.name,
            tags=list(cfg.tags or []),
            mode=cfg.mode,
            dir=str(run_dir),
            config=config,
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(
                console="off", silent=True, x_disable_stats=True, disable_git=True, save_code=False
            ),
        )
        self.id = self.run.id

    def log(self, row: dict, step: int) -> None:
        self.run.log(row, step=step)

    def log_media(self, media: dict[str, Path], step: int) -> None:
        items = {}
        for key, path in media.items():
            if path.suffix in (".mp4", ".gif"):
                items[key] = self.wandb.Video(str(path), format=path.suffix[1:])
            else:
                items[key] = self.wandb.Image(str(path))
        self.run.log(items, step=step)

    def finish(self, exit_code: int) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as e:  # a dead wandb service must not cost us the summary
            log.warning("wandb: could not finish the run cleanly: %s", e)


class Logger:
    """Fans each row out to the metrics file and, if configured, W&B."""

    def __init__(self, cfg: DictConfig, run_dir: Path, config: dict, wandb_id: str | None):
        self.file = MetricsFile(run_dir / "metrics.jsonl")
        self.wandb = None
        if cfg.logger.get("kind", "none") == "wandb":
            if cfg.logger.mode not in WANDB_MODES:
                raise ConfigError(
                    f"logger.mode={cfg.logger.mode}: use one of {', '.join(WANDB_MODES)}"
                )
            if cfg.logger.mode != "disabled":
                self.wandb = WandbLogger(cfg.logger, run_dir, config, wandb_id)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb else None

    def log(self, metrics: dict, step: int, elapsed: float) -> None:
        row = {"step": step, "time": round(elapsed, 4), **metrics}
        self.file.write(row)
        if self.wandb:
            self.wandb.log({k: v for k, v in metrics.items() if _is_number(v)}, step)

    def log_media(self, media: dict[str, Path], step: int) -> None:
        if self.wandb and media:
            self.wandb.log_media(media, step)

    def close(self, exit_code: int = 0) -> None:
        self.file.close()
        if self.wandb:
            self.wandb.finish(exit_code)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))
