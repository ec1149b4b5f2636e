"""A Bernoulli RBM trained by persistent contrastive divergence, and its greedy stack, a deep
belief net (Hinton, Osindero & Teh 2006). The maths are in ``lab/gen/energy.py``.

The RBM sees binary images: each pixel in [0, 1] becomes 1 with its own intensity as the
probability (stochastic binarisation, drawn afresh for every batch), so the machine's p(v | h)
models grey levels in expectation. Its samples are therefore shown, and scored by FID, as the
mean-field image p(v | h) of a block Gibbs chain's last step, in greyscale against the real
(grey) images: the same real set, floor and feature extractor as the GANs', so the numbers
compare. A binary sample would be scored against grey reals and pay for the binarisation.
"""

import zlib

import torch
from omegaconf import ListConfig

from lab.compute import Compute
from lab.config import require_positive
from lab.errors import ConfigError
from lab.gen.energy import RBMLayer, bernoulli, cd_gradient, pseudo_log_likelihood
from lab.gen.models import Batches, Figures, GenerativeModel
from lab.schedules import linear_schedule

FIGURE_SEED = 0  # the figures' chains start from the same states at every evaluation
CHAIN_SNAPSHOTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)  # Gibbs steps shown per chain
HELD_OUT_IMAGES = 1000  # test images scored per evaluation (the pseudo-likelihood is V wide)
HELD_OUT_BITS = 16  # bits flipped per image for the stochastic pseudo-log-likelihood


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] to flat binary rows [N, C·H·W], each pixel on with its intensity."""
    return bernoulli((x.flatten(1).float() + 1) / 2, generator)


class RBM(GenerativeModel):
    """``layers``: hidden units per RBM; one entry is an RBM, more a DBN whose RBMs train one
    after another (layer l over its share of ``total_steps``) on the binary hidden states of
    the one below. Each update: ``cd_k`` Gibbs steps from persistent chains (``persistent``)
    or from the data (CD-k), then SGD with momentum up the CD gradient, its rate annealed
    linearly to 0 over each RBM's share with ``anneal`` (as Tieleman 2008 trains PCD: at a
    constant rate the chains chase a moving model and its samples swing). Sampling: a
    ``sample_steps`` Gibbs chain in the top RBM, then one top-down pass to the pixels.
    """

    headline_metric = "train/recon"

    def __init__(
        self,
        shape,
        compute: Compute,
        total_steps: int,
        layers=(256,),
        cd_k: int = 1,
        persistent: bool = True,
        lr: float = 0.03,
        anneal: bool = True,
        momentum: float = 0.5,
        weight_decay: float = 1e-4,
        sample_steps: int = 1000,
        channels_last: bool = False,
    ):
        layers = list(layers) if isinstance(layers, list | tuple | ListConfig) else [layers]
        if not layers or not all(isinstance(n, int) and n > 0 for n in layers):
            raise ConfigError(
                f"model.layers={layers}: a list of hidden-unit counts > 0, e.g. [256] or [256,256]"
            )
        require_positive("model", cd_k=cd_k, sample_steps=sample_steps, total_steps=total_steps)
        if not 0 <= momentum < 1 or weight_decay < 0:
            raise ConfigError(
                f"model.momentum={momentum}, model.weight_decay={weight_decay}: "
                "momentum must be in [0, 1) and weight_decay >= 0"
            )
        visible = shape[0] * shape[1] * shape[2]
        super().__init__(shape, compute, visible, layers[0], channels_last)
        self.sizes = [visible, *layers]
        self.cd_k, self.persistent, self.sample_steps = cd_k, persistent, sample_steps
        self.total_steps, self.lr, self.anneal = total_steps, lr, anneal
        self.layers = [
            RBMLayer(v, h).to(self.device) for v, h in zip(self.sizes[:-1], layers, strict=True)
        ]
        self.nets = {f"rbm{i}": layer for i, layer in enumerate(self.layers)}
        self.optimizers = {
            name: torch.optim.SGD(
                [
                    {"params": [layer.W], "weight_decay": weight_decay},
                    {"params": [layer.b, layer.c], "weight_decay": 0.0},
                ],
                lr=lr,
                momentum=momentum,
            )
            for name, layer in self.nets.items()
        }
        self.chains: list[torch.Tensor | None] = [None] * len(layers)  # PCD's fantasy particles
        self.updates = 0

    def _layer_at(self, update: int) -> int:
        """The RBM that trains at ``update``: each takes an equal share of ``total_steps``."""
        return min(update * len(self.layers) // self.total_steps, len(self.layers) - 1)

    def learning_rate(self, update: int) -> float:
        """``lr``, or with ``anneal`` ``lr`` · (1 - the fraction of this RBM's share done)."""
        if not self.anneal:
            return self.lr
        share = self.total_steps / len(self.layers)
        return linear_schedule(update - self._layer_at(update) * share, self.lr, 0.0, share)

    def _top(self) -> int:
        """The highest RBM trained so far: sampling stops there, as the stack did."""
        return self._layer_at(max(self.updates - 1, 0))

    @torch.no_grad()
    def update(self, batches: Batches) -> dict[str, torch.Tensor]:
        """One CD-k (or PCD-k) step of the RBM now training, on the data passed up to it."""
        index = self._layer_at(self.updates)
        layer = self.layers[index]
        v = binarize(batches())
        for below in self.layers[:index]:
            v = below.up(v)
        start = self.chains[index] if self.persistent else None
        if start is None or len(start) != len(v):  # the first batch (or a smaller last one)
            start = v
        negative, _ = layer.gibbs(start, self.cd_k)
        if self.persistent:
            self.chains[index] = negative
        gradient = cd_gradient(v, negative, layer.W, layer.c)
        for parameter, ascent in zip((layer.W, layer.b, layer.c), gradient, strict=True):
            parameter.grad = -ascent  # the optimizer descends
        optimizer = self.optimizers[f"rbm{index}"]
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate(self.updates)
        optimizer.step()
        self.updates += 1
        units = torch.randint(v.shape[1], (len(v),), device=v.device)
        return {
            "train/recon": self._recon(layer, v),
            "train/pseudo_log_likelihood": pseudo_log_likelihood(
                v, layer.W, layer.b, layer.c, units
            ).mean(),
            "train/layer": torch.tensor(float(index), device=v.device),
        }

    @staticmethod
    def _recon(layer: RBMLayer, v: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the one-step mean-field reconstruction p(v | p(h | v))."""
        h = torch.sigmoid(v @ layer.W + layer.c)
        return (layer.down(h) - v).square().sum(dim=1).mean()

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The chains' starting states: fair coin flips for the top RBM's visible units."""
        size = self.sizes[self._top()]
        if generator is None:
            return bernoulli(torch.full((n, size), 0.5, device=self.device))
        return bernoulli(torch.full((n, size), 0.5), generator).to(self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Mean-field images in [-1, 1] of ``sample_steps``-long chains started at ``z``.

        The chains' coin flips are seeded by ``z`` itself, so an image is a function of its
        code (as a GAN's is) and batches of different codes draw independent noise.
        """
        generator = torch.Generator(z.device).manual_seed(zlib.crc32(z.cpu().numpy().tobytes()))
        _, image = self._sample(z, self.sample_steps, generator)
        return image

    def _sample(self, v: torch.Tensor, steps: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` Gibbs steps in the top RBM from ``v``, then the top-down pass: the top
        chain's states and the image p(v | h) of the pixels, in [-1, 1]."""
        top = self._top()
        v, probs = self.layers[top].gibbs(v, steps, generator)
        states = v
        for layer in reversed(self.layers[:top]):
            probs = layer.down(states)
            states = bernoulli(probs, generator)
        return v, (probs * 2 - 1).reshape(len(v), *self.shape)

    @torch.no_grad()
    def held_out(self, x: torch.Tensor) -> dict[str, float]:
        """The bottom RBM's reconstruction error and pseudo-log-likelihood (nats per image,
        ``HELD_OUT_BITS`` flipped bits each) on binarised test images, the same draws each time."""
        generator = torch.Generator().manual_seed(FIGURE_SEED)
        v = binarize(x[:HELD_OUT_IMAGES].cpu(), generator).to(self.device)
        layer = self.layers[0]
        rows = v.repeat(HELD_OUT_BITS, 1)
        units = torch.randint(v.shape[1], (len(rows),), generator=generator).to(self.device)
        pll = pseudo_log_likelihood(rows, layer.W, layer.b, layer.c, units)
        return {
            "eval/recon": float(self._recon(layer, v)),
            "eval/pseudo_log_likelihood": float(pll.mean()),
        }

    @torch.no_grad()
    def figures(self, x: torch.Tensor) -> Figures:
        """``chains``: 8 chains (rows) at 1, 2, 5, ... 1,000 Gibbs steps (columns), to see them
        mix; ``filters``: the first RBM's weights into 64 hidden units, each scaled to ±1."""
        generator = torch.Generator(self.device).manual_seed(FIGURE_SEED)
        v = self.latent(8, torch.Generator().manual_seed(FIGURE_SEED))
        columns, done = [], 0
        for step in CHAIN_SNAPSHOTS:
            v, image = self._sample(v, step - done, generator)
            columns.append(image)
            done = step
        chains = torch.stack(columns, dim=1).flatten(0, 1)
        W = self.layers[0].W[:, :64].T
        filters = W / W.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        return {
            "chains": (chains, len(CHAIN_SNAPSHOTS)),
            "filters": (filters.reshape(-1, *self.shape), 8),
        }

    def state_dict(self) -> dict:
        chains = [None if c is None else c.cpu() for c in self.chains]
        return super().state_dict() | {"updates": self.updates, "chains": chains}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates = state["updates"]
        self.chains = [None if c is None else c.to(self.device) for c in state["chains"]]
