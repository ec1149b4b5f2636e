"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for the discriminator's input.

With under 1,500 training images a discriminator memorises the real set and its gradients stop
telling the generator anything. DiffAugment shows it real and generated images alike through
the same random transforms T, so it trains as D∘T; because T is differentiable, the generator's
gradient flows back through it, and because fakes are transformed too, the generator is not
pushed to produce transformed images. Each transform draws its parameters per image from
torch's global generator, on the images' device; images are in [-1, 1], so the zero that fills
translated borders and cut-out squares is mid-grey, as in the paper's code.
"""

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from lab.errors import ConfigError

TRANSLATION_RATIO = 1 / 8  # the largest shift, a fraction of the side (the paper's 1/8)
CUTOUT_RATIO = 1 / 2  # the side of the cut-out square, a fraction of the image's (the paper's)


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One draw from U(low, high) per image, shaped to broadcast over [N, C, H, W]."""
    return torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) * (high - low) + low


def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness (+ U(-1/2, 1/2)), then saturation (× U(0, 2) around the pixel's channel mean;
    nothing on one channel), then contrast (× U(1/2, 3/2) around the image's mean)."""
    x = x + _uniform(x, -0.5, 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * _uniform(x, 0.0, 2.0) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Each image shifted by whole pixels, up to ``ratio`` of its side each way, zero-filled."""
    n, _, h, w = x.shape
    dy, dx = int(h * ratio), int(w * ratio)
    shift_y = torch.randint(-dy, dy + 1, (n, 1, 1), device=x.device)
    shift_x = torch.randint(-dx, dx + 1, (n, 1, 1), device=x.device)
    padded = F.pad(x, (dx, dx, dy, dy))
    # Output pixel (i, j) reads padded pixel (i + dy - shift_y, j + dx - shift_x).
    rows = torch.arange(h, device=x.device)[None, :, None] + dy - shift_y  # [N, H, 1]
    cols = torch.arange(w, device=x.device)[None, None, :] + dx - shift_x  # [N, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # indexing puts channels last


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Each image with a square of side ``ratio`` of its own zeroed, centred anywhere on it
    (clipped at the borders)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio), int(w * ratio)
    top = torch.randint(0, h + 1 - size_y % 2, (n, 1, 1), device=x.device) - size_y // 2
    left = torch.randint(0, w + 1 - size_x % 2, (n, 1, 1), device=x.device) - size_x // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside).to(x.dtype)[:, None]


TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "translation": translation,
    "cutout": cutout,
    "color": color,
}


class DiffAugment:
    """The transforms a ``model.augment`` list names, applied in the order the paper's code
    does (color, translation, cutout) whatever the list's order; no list, no change."""

    def __init__(self, names: Iterable[str] | str | None = (), key: str = "model.augment"):
        if names is None:
            names = ()
        if isinstance(names, str):  # model.augment=translation on the command line
            names = [names]
        names = list(names)
        unknown = [name for name in names if name not in TRANSFORMS]
        if unknown:
            raise ConfigError(
                f"{key}={names}: unknown augmentation {unknown[0]!r}; "
                f"choose from {', '.join(TRANSFORMS)} (a list, e.g. {key}=[translation,color])"
            )
        order = ("color", "translation", "cutout")
        self.names = [name for name in order if name in names]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = TRANSFORMS[name](x)
        return x

    def __bool__(self) -> bool:
        return bool(self.names)
