"""Image data sets as uint8 tensors ``[N, C, H, W]``, read from disk or scikit-learn; no downloads.

Each loader returns an :class:`ImageData` with a fixed train/test split and labels (used by the
FID domain classifier). Everything lives in memory: the largest supported set (CIFAR-10) is
180 MB as uint8, and batches are cast to float on the device, four times cheaper to copy.
"""

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lab.errors import ConfigError

SPLIT_SEED = 0  # the digits train/test split never depends on the run's seed


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor | None
    test: torch.Tensor
    test_labels: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        if self.train_labels is None:
            return None
        return int(self.train_labels.max()) + 1

    def all_images(self) -> torch.Tensor:
        return torch.cat([self.train, self.test])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] to float [-1, 1], the range every model and feature extractor uses."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] back to uint8, for grids and sample files."""
    return images.float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images to ``size`` x ``size`` (a no-op at the native size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 8:
        raise ConfigError(f"dataset.size={size}: must be an integer >= 8 (the image side)")


def digits(name: str = "digits", size: int = 16, test_fraction: float = 0.2) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (shipped inside scikit-learn), upscaled to ``size``."""
    from sklearn.datasets import load_digits

    _check_size(size)
    if not 0 < test_fraction < 1:
        raise ConfigError(f"dataset.test_fraction={test_fraction}: must be in (0, 1)")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    images, labels = resize(images[order], size), labels[order]
    n_test = round(len(images) * test_fraction)
    return ImageData(name, images[n_test:], labels[n_test:], images[:n_test], labels[:n_test])


def _find(root: Path, stem: str, dataset: str) -> Path:
    for candidate in (
        root / stem,
        root / f"{stem}.gz",
        root / "raw" / stem,
        root / "raw" / f"{stem}.gz",
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"dataset.root={root}: no {stem}[.gz] there; put the {dataset} IDX files in that folder "
        "or point dataset.root at them"
    )


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist(name: str = "mnist", root: str = "data/mnist", size: int = 28) -> ImageData:
    """MNIST or Fashion-MNIST from the four IDX files (as distributed, gzipped or not)."""
    _check_size(size)
    root = Path(root).expanduser()
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte", name))
        labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte", name))
        parts[split] = (
            resize(torch.from_numpy(images.copy())[:, None], size),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return ImageData(name, *parts["train"], *parts["test"])


def cifar10(name: str = "cifar10", root: str = "data/cifar10", size: int = 32) -> ImageData:
    """CIFAR-10 from the python batches (``data_batch_1..5`` and ``test_batch``)."""
    _check_size(size)
    root = Path(root).expanduser()
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    files = {
        "train": [folder / f"data_batch_{i}" for i in range(1, 6)],
        "test": [folder / "test_batch"],
    }
    missing = [p for paths in files.values() for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"dataset.root={root}: no {missing[0].name} there; extract cifar-10-python.tar.gz into "
            "that folder (data_batch_1..5 and test_batch)"
        )
    parts = {}
    for split, paths in files.items():
        batches = []
        for path in paths:
            with path.open("rb") as f:
                batches.append(pickle.load(f, encoding="bytes"))
        images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([b[b"labels"] for b in batches]).astype(np.int64)
        parts[split] = (resize(torch.from_numpy(images), size), torch.from_numpy(labels))
    return ImageData(name, *parts["train"], *parts["test"])


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def image_folder(
    name: str = "image_folder",
    root: str | None = None,
    size: int = 32,
    channels: int = 3,
    test_fraction: float = 0.1,
) -> ImageData:
    """PNG/JPEG files under ``root``; class labels from subfolder names when there are any."""
    from PIL import Image

    _check_size(size)
    if root is None:
        raise ConfigError("dataset.root is not set: pass dataset.root=<folder of PNG/JPEG images>")
    if channels not in (1, 3):
        raise ConfigError(f"dataset.channels={channels}: use 1 (grey) or 3 (RGB)")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"dataset.root={root}: no such folder; expected a folder of PNG/JPEG files"
        )
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise ConfigError(
            f"dataset.root={root}: found {len(paths)} PNG/JPEG images; need at least 2"
        )
    classes = sorted({p.parent.relative_to(folder).as_posix() for p in paths})
    mode = "L" if channels == 1 else "RGB"
    images = np.stack(
        [np.asarray(Image.open(p).convert(mode).resize((size, size), Image.BICUBIC)) for p in paths]
    ).reshape(len(paths), size, size, channels)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    labels = None
    if len(classes) > 1:
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[p.parent.relative_to(folder).as_posix()] for p in paths])
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    images = images[order]
    labels = labels[order] if labels is not None else None
    n_test = max(1, round(len(images) * test_fraction))
    split = (
        (images[n_test:], labels[n_test:] if labels is not None else None),
        (images[:n_test], labels[:n_test] if labels is not None else None),
    )
    return ImageData(name, *split[0], *split[1])


class Batches:
    """Shuffled epochs of training images, cast to float on the device.

    The uint8 set is uploaded once (from pinned memory, without blocking): every supported set
    fits in GPU memory many times over, so no batch crosses the bus again. ``channels_last``
    lays batches out the way cuDNN's fastest convolutions want them.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: torch.device,
        seed: int,
        channels_last: bool = False,
    ):
        if batch_size < 1:
            raise ConfigError(f"model.batch_size={batch_size}: must be > 0")
        if batch_size > len(images):
            raise ConfigError(
                f"model.batch_size={batch_size}: larger than the {len(images)} training images"
            )
        self.images = upload(images, device)
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._shuffle()
        self.position = 0

    def __call__(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.order):
            self.order, self.position = self._shuffle(), 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        batch = self.images[index]
        return to_float(batch).contiguous(memory_format=self.memory_format)

    def _shuffle(self) -> torch.Tensor:
        """An epoch's order, drawn on the CPU (reproducible anywhere), kept beside the images."""
        order = torch.randperm(len(self.images), generator=self.generator)
        return order.to(self.images.device)

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "order": self.order.cpu(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"].to(self.images.device), state["position"]


def upload(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy on ``device``: from pinned memory and non-blocking when that is CUDA."""
    if device.type == "cuda":
        return images.pin_memory().to(device, non_blocking=True)
    return images.to(device)
