"""Where metrics go: ``metrics.jsonl`` always; Weights & Biases (``logger=wandb``, the
default), TensorBoard (``logger=tensorboard``), both (``logger=[wandb,tensorboard]``) or neither
(``logger=none``). Each dashboard is a sink with ``log``, ``log_media`` and ``finish``."""

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


class TensorBoardLogger:
    """Event files in ``<run dir>/<logger.tensorboard.dir>`` (torch's SummaryWriter)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, start_step: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: "
                "pip install -c constraints.txt -e '.[tensorboard]'"
            ) from None
        # On resume, events past the checkpoint (a run killed after it) are dropped, as the
        # rows of metrics.jsonl are.
        self.writer = SummaryWriter(
            log_dir=str(run_dir / cfg.dir), purge_step=start_step or None, flush_secs=10
        )

    def log(self, row: dict, step: int) -> None:
        for key, value in row.items():
            self.writer.add_scalar(key, value, step)

    def log_media(self, media: dict[str, Path], step: int) -> None:
        import numpy as np
        from PIL import Image

        for key, path in media.items():
            if path.suffix == ".png":  # videos would need moviepy: they stay in media/ and W&B
                image = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(key, image, step, dataformats="HWC")

    def finish(self, exit_code: int) -> None:
        self.writer.close()


class Logger:
    """Fans each row out to the metrics file and the configured dashboards."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        config: dict,
        wandb_id: str | None,
        start_step: int = 0,
    ):
        self.file = MetricsFile(run_dir / "metrics.jsonl")
        self.wandb: WandbLogger | None = None
        self.sinks: list = []
        wandb_cfg, tensorboard_cfg = cfg.logger.get("wandb"), cfg.logger.get("tensorboard")
        if wandb_cfg is not None:
            if wandb_cfg.mode not in WANDB_MODES:
                raise ConfigError(
                    f"logger.wandb.mode={wandb_cfg.mode}: use one of {', '.join(WANDB_MODES)}"
                )
            if wandb_cfg.mode != "disabled":
                self.wandb = WandbLogger(wandb_cfg, run_dir, config, wandb_id)
                self.sinks.append(self.wandb)
        if tensorboard_cfg is not None:
            self.sinks.append(TensorBoardLogger(tensorboard_cfg, run_dir, start_step))

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb else None

    def log(self, metrics: dict, step: int, elapsed: float) -> None:
        row = {"step": step, "time": round(elapsed, 4), **metrics}
        self.file.write(row)
        numbers = {k: v for k, v in metrics.items() if _is_number(v)}
        for sink in self.sinks:
            sink.log(numbers, step)

    def log_media(self, media: dict[str, Path], step: int) -> None:
        for sink in self.sinks if media else ():
            sink.log_media(media, step)

    def close(self, exit_code: int = 0) -> None:
        self.file.close()
        for sink in self.sinks:
            sink.finish(exit_code)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))
