"""Device, precision, threads and seeding: the few lines of GPU handling, in one place."""

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from lab.errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda > mps > cpu; anything else must exist on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name}: not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name}: CUDA is not available here; use device=auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available here; use device=auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name}: use auto, cpu, cuda, cuda:N or mps")
    return device


@dataclass
class Compute:
    """Where tensors live and how the forward pass is cast; tasks take one of these."""

    device: torch.device
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in DTYPES:
            raise ConfigError(f"precision={self.precision}: use one of {', '.join(DTYPES)}")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision=fp16 needs CUDA; use precision=bf16 or fp32 on CPU")
        enabled = self.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=enabled)

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op at fp32)."""
        dtype = DTYPES[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def backward_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        max_grad_norm: float | None,
        clip: list[torch.nn.Parameter] | None = None,
    ) -> torch.Tensor:
        """Backward, unscale, clip ``clip`` (default: all), step; returns the pre-clip norm."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        params = (
            clip if clip is not None else [p for g in optimizer.param_groups for p in g["params"]]
        )
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
        self.scaler.step(optimizer)
        self.scaler.update()
        return norm.detach()


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def set_threads(threads: int | None) -> None:
    """Small nets run fastest on one thread: more threads only add synchronisation."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(
                f"threads={threads}: use a positive count, or null for torch's default"
            )
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (environments are seeded by whoever resets them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNG states, in types that load with ``weights_only=True``."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
