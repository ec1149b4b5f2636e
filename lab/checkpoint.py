"""Checkpoints written atomically and loaded with ``weights_only=True``."""

import os
import tempfile
from pathlib import Path

import torch

from lab.errors import ConfigError


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint; a missing or corrupt file is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; pass a run directory that has one")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable ({reason})") from None
