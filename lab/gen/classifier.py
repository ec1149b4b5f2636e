"""The FID domain classifier: a small CNN the lab trains on the data set itself, once.

Trained deterministically on the training split and cached by the data's digest, so every run
on a data set scores with the same features; its accuracy on the test split is reported next
to FID (``eval/fid_classifier_accuracy``).
"""

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lab import checkpoint
from lab.errors import ConfigError
from lab.gen.data import ImageData, to_float, upload

log = logging.getLogger("lab")

CLASSIFIER_VERSION = 1  # bump when DomainClassifier or its training changes: old caches retire


class DomainClassifier(nn.Module):
    """A small CNN for the data set's classes; FID uses its pooled penultimate features."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.num_features = 4 * width
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Random translations by up to ``pixels``: cheap augmentation that helps on 1.4k digits."""
    padded = F.pad(x, (pixels,) * 4)
    dx, dy = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_classifier(
    data: ImageData,
    device: torch.device,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-2,
) -> tuple[DomainClassifier, float]:
    """Train on the training split; return the net and its accuracy on the test split."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DomainClassifier(data.shape[0], data.num_classes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    images, labels = upload(data.train, device), data.train_labels.to(device)
    steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(device)
        for i in range(len(images) // batch_size):
            index = order[i * batch_size : (i + 1) * batch_size]
            x = _shift(to_float(images[index]), generator)
            loss = F.cross_entropy(net(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.inference_mode():
        test = upload(data.test, device)
        logits = torch.cat([net(to_float(x)) for x in test.split(1024)])
        accuracy = (logits.argmax(1).cpu() == data.test_labels).float().mean().item()
    return net, accuracy


def domain_classifier(
    data: ImageData, device: torch.device, cache_dir: str, epochs: int
) -> tuple[DomainClassifier, float]:
    """The cached classifier for this data set, trained (once) when there is none."""
    if data.num_classes is None:
        raise ConfigError(
            f"fid.features=domain needs class labels, and {data.name} has none (an image_folder "
            "without class subfolders): use fid.features=inception with fid.weights=<file>"
        )
    digest = hashlib.sha256()
    for part in (data.train, data.train_labels, data.test, data.test_labels):
        digest.update(part.numpy().tobytes())
    digest.update(f"v{CLASSIFIER_VERSION} epochs={epochs}".encode())
    path = Path(cache_dir).expanduser() / f"domain_{data.name}_{digest.hexdigest()[:16]}.pt"
    net = DomainClassifier(data.shape[0], data.num_classes)
    if path.is_file():
        saved = checkpoint.load(path)
        net.load_state_dict(saved["state_dict"])
        return net.to(device).eval(), saved["accuracy"]
    log.info("training the FID domain classifier for %s (once; cached in %s)", data.name, path)
    trained, accuracy = train_classifier(data, device, epochs)
    net.load_state_dict({k: v.cpu() for k, v in trained.state_dict().items()})
    checkpoint.save_atomic({"state_dict": net.state_dict(), "accuracy": accuracy}, path)
    log.info("FID domain classifier: %.2f%% held-out accuracy", 100 * accuracy)
    return net.to(device).eval(), accuracy
