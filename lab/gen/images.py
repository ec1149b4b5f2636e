"""Image grids with torch and Pillow (torchvision's ``make_grid`` is not installable here)."""

import math
from pathlib import Path

import torch

from lab.gen.data import to_uint8


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """float [-1, 1] images ``[N, C, H, W]`` tiled into one uint8 ``[H', W', C]`` array."""
    images = to_uint8(images.detach().cpu())
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, top : top + h, left : left + w] = image
    return canvas.permute(1, 2, 0)


def save_grid(
    images: torch.Tensor, path: Path, nrow: int | None = None, min_cell: int = 32
) -> Path:
    """Write a PNG grid; small images are enlarged (nearest) so a 16x16 digit is visible."""
    from PIL import Image

    scale = max(1, math.ceil(min_cell / images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=scale, mode="nearest")
    array = grid(images, nrow).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path
