"""What every generative model is to ``GenTask``: one optimizer step per ``update``, a prior
to sample codes from, and images from codes.

A model sees real batches through a callable (a WGAN critic takes several per generator step)
and returns plain numbers. ``generate(z)`` gives images in [-1, 1] for FID and sample grids.
The families: GANs in ``lab/gen/gan.py`` and ``lab/gen/stylegan.py``, the autoencoder and the
VAE in ``lab/gen/autoencoders.py``.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lab.compute import Compute
from lab.config import require_positive
from lab.errors import ConfigError
from lab.gen.nets import init_dcgan

Batches = Callable[[], torch.Tensor]
Figures = dict[str, tuple[torch.Tensor, int]]  # name -> (images in [-1, 1], images per row)


class GenerativeModel(ABC):
    """Nets and optimizers by name, so saving, loading and device moves are written once."""

    headline_metric: ClassVar[str]  # the training metric the progress bar shows
    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, shape, compute: Compute, z_dim: int, width: int, channels_last: bool):
        require_positive("model", z_dim=z_dim, width=width)
        self.shape, self.compute, self.z_dim = tuple(shape), compute, z_dim
        self.device = compute.device
        self.memory_format = (
            torch.channels_last
            if channels_last and self.device.type == "cuda"
            else torch.contiguous_format
        )

    @abstractmethod
    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        """One optimizer step of each net; ``train/...`` metrics as detached device scalars."""

    @abstractmethod
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from codes ``z`` drawn by ``latent``."""

    def generate_truncated(self, z: torch.Tensor, psi: float) -> torch.Tensor:
        """Images from codes ``z`` whose style is pulled towards the mean by ``psi`` in (0, 1]:
        only a model with a mapping network (a mean style) has this."""
        raise ConfigError(
            f"truncation={psi}: {type(self).__name__} has no mapping network to truncate; "
            "only model=stylegan samples with truncation"
        )

    def fit_prior(self, images: torch.Tensor) -> None:  # noqa: B027 (a hook; most need none)
        """Fit the prior ``latent`` draws from to the training ``images`` (float, [-1, 1]).

        Nothing to fit by default: the prior is N(0, I).
        """

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N(0, I) codes on the device. With a (CPU) generator, e.g. an evaluation's fixed
        batch, they are drawn on the CPU, so they are the same whatever the device."""
        if generator is None:  # training: no host-to-device copy per step
            return torch.randn(n, self.z_dim, device=self.device)
        return torch.randn(n, self.z_dim, generator=generator).to(self.device)

    def held_out(self, x: torch.Tensor) -> dict[str, float]:
        """``eval/...`` metrics on held-out images ``x``; none for a model without a likelihood."""
        return {}

    def figures(self, x: torch.Tensor) -> Figures:
        """Image grids of held-out images ``x`` beside the samples; none by default."""
        return {}

    def train(self, mode: bool = True) -> None:
        for net in self.nets.values():
            net.train(mode)

    def state_dict(self) -> dict:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scaler": self.compute.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.compute.scaler.load_state_dict(state["scaler"])

    def _place(self, **nets: nn.Module) -> None:
        self.nets = {}
        for name, net in nets.items():
            init_dcgan(net)
            self.nets[name] = net.to(self.device, memory_format=self.memory_format)

    def _adam(self, net: str, lr: float, betas) -> torch.optim.Adam:
        fused = self.device.type in ("cuda", "cpu")
        return torch.optim.Adam(self.nets[net].parameters(), lr=lr, betas=tuple(betas), fused=fused)

    def _step(self, loss: torch.Tensor, optimizer: str) -> None:
        self.compute.backward_step(loss, self.optimizers[optimizer], max_grad_norm=None)
