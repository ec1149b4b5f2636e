"""FID and KID that work offline and say how much of the number is noise.

Features come from either a small classifier the lab trains on the data set itself
(``lab/gen/classifier.py``) or Inception from a local weights file.
torchmetrics accumulates the statistics (float64) and computes FID and KID; features are
extracted once per image and handed to both metrics through a pass-through module. With the
domain features, the classifier's head turns the same features into class probabilities, which
say how many samples it recognises (``eval/confident``) and how evenly they cover the classes
(``eval/class_entropy``).
"""

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lab.errors import ConfigError
from lab.gen.classifier import DomainClassifier, domain_classifier
from lab.gen.data import ImageData, to_float, upload

# A sample counts as recognised when the domain classifier gives its top class at least this
# probability. On digits, 97% of real images (train and test splits alike) pass at 0.9 (94% at
# 0.95, 87% at 0.99), against 46% of two different digits averaged, 38% of uniform noise. A softmax
# is overconfident far from its data: a blank image passes, so read it with eval/class_entropy.
CONFIDENT = 0.9
RECOGNITION = ("eval/confident", "eval/class_entropy")  # also reported for real images, *_real


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)). The last trace is
    taken as tr((A sigma2 A)^(1/2)) with A = sigma1^(1/2): a symmetric matrix, so ``eigh``
    gives it to full precision (rounding's tiny negative eigenvalues are clamped to 0).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    values, vectors = torch.linalg.eigh(sigma1)
    root = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    inner = root @ sigma2 @ root
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace()
    return float(distance - 2 * trace_sqrt)


def confident_fraction(logits: torch.Tensor, threshold: float = CONFIDENT) -> float:
    """Fraction of samples whose top class probability, max_c softmax(logits)_c, is >= threshold."""
    top = logits.double().softmax(dim=1).amax(dim=1)
    return float((top >= threshold).double().mean())


def class_entropy(logits: torch.Tensor) -> float:
    """Entropy in nats of the mean class distribution, H(mean_i softmax(logits_i)).

    log(classes) when the samples spread evenly over the classes, 0 when all are one class:
    the mode-collapse half of the Inception score, without its per-sample half.
    """
    mean = logits.double().softmax(dim=1).mean(dim=0)
    return float(torch.special.entr(mean).sum())


class ClassifierFeatures(nn.Module):
    """The domain classifier's pooled penultimate features: what FID compares.

    ``head`` maps those features to the data set's class logits.
    """

    def __init__(self, classifier: DomainClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features
        self.head: nn.Module | None = classifier.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


class InceptionFeatures(nn.Module):
    """2048-d Inception-v3 pool features from a local file, for images in [-1, 1].

    A TorchScript file (NVIDIA's ``inception-2015-12-05.pt``, as StyleGAN's metrics use) runs
    as is. A state dict (torch-fidelity's / pytorch-fid's ``pt_inception-2015-12-05-*.pth``)
    goes through torchmetrics' ``NoTrainInceptionV3``, which needs the torch-fidelity package.
    """

    num_features = 2048
    head: nn.Module | None = None  # its classes are ImageNet's, not the data set's

    def __init__(self, weights: str | None):
        super().__init__()
        if not weights:
            raise ConfigError(
                "fid.features=inception needs fid.weights=<local Inception weights file>; "
                "nothing is downloaded"
            )
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"fid.weights={weights}: no such file (Inception weights expected)")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
            self.torchscript = True
        except RuntimeError:
            self.net, self.torchscript = self._torchmetrics(str(path)), False

    @staticmethod
    def _torchmetrics(path: str) -> nn.Module:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise ConfigError(
                f"fid.weights={path}: a state dict needs torch-fidelity (pip install "
                "torch-fidelity, which needs torchvision); or give a TorchScript Inception "
                "(inception-2015-12-05.pt)"
            )
        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.torchscript:
            return self.net(x, return_features=True).float()
        return self.net(x).float()


class PassThrough(nn.Module):
    """The 'feature extractor' handed to torchmetrics: features are already extracted."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FIDScorer:
    """FID and KID of generated images against a fixed real set, and the real-vs-real floor.

    ``real`` (uint8) is split once, with a fixed seed, into two disjoint sets of ``samples``
    images: A is the reference (its statistics are computed once, ``reset_real_features=False``)
    and FID(A, B) is the floor, what a perfect model would score at this sample count. Where the
    extractor has a class ``head``, B's recognition figures are the floor's too (``*_real``).
    """

    def __init__(
        self,
        extractor: nn.Module,
        real: torch.Tensor,
        samples: int,
        kid_subsets: int,
        kid_subset_size: int,
        device: torch.device,
        seed: int = 0,
        batch_size: int = 500,
    ):
        self.check(samples, len(real), kid_subset_size)
        self.extractor, self.device, self.batch_size = extractor.eval(), device, batch_size
        self.head = extractor.head
        self.samples, self.seed = samples, seed
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        reference, other = real[order[:samples]], real[order[samples : 2 * samples]]
        dim = extractor.num_features
        self.fid = FrechetInceptionDistance(feature=PassThrough(dim), reset_real_features=False)
        with warnings.catch_warnings():  # "KID keeps all features": 2 x fid.samples here
            warnings.simplefilter("ignore", UserWarning)
            self.kid = KernelInceptionDistance(
                feature=PassThrough(dim),
                subsets=kid_subsets,
                subset_size=kid_subset_size,
                reset_real_features=False,
            )
        self.fid, self.kid = self.fid.to(device), self.kid.to(device)
        features = self.features(
            lambda i, n: to_float(upload(reference[i : i + n], device)), samples
        )
        self.fid.update(features, real=True)
        self.kid.update(features, real=True)
        floor = self.score(lambda i, n: to_float(upload(other[i : i + n], device)))
        self.floor = {"eval/fid_floor": floor["eval/fid"], "eval/kid_floor": floor["eval/kid_mean"]}
        self.floor |= {f"{key}_real": value for key, value in floor.items() if key in RECOGNITION}

    @staticmethod
    def check(samples: int, real: int, kid_subset_size: int) -> None:
        """Sample counts that cannot give a FID, a KID or a floor: before any work is done."""
        if not isinstance(samples, int) or samples < 2:
            raise ConfigError(f"fid.samples={samples}: FID needs at least 2 samples")
        if 2 * samples > real:
            raise ConfigError(
                f"fid.samples={samples}: the floor needs two disjoint real sets of that size, and "
                f"the data set has {real} images: use fid.samples <= {real // 2}"
            )
        if not isinstance(kid_subset_size, int) or not 2 <= kid_subset_size <= samples:
            raise ConfigError(
                f"fid.kid_subset_size={kid_subset_size}: KID draws subsets of 2 to fid.samples="
                f"{samples} images; choose a size in that range"
            )

    @torch.inference_mode()
    def features(self, images: Callable[[int, int], torch.Tensor], total: int) -> torch.Tensor:
        """Features of ``total`` images; ``images(start, count)`` gives each chunk."""
        chunks = []
        for start in range(0, total, self.batch_size):
            count = min(self.batch_size, total - start)
            chunks.append(self.extractor(images(start, count)).float())
        return torch.cat(chunks)

    def score(
        self, images: Callable[[int, int], torch.Tensor], total: int | None = None
    ) -> dict[str, float]:
        """FID and KID of ``total`` (default ``samples``) images against the reference set, and
        how the domain classifier recognises them."""
        total = total or self.samples
        features = self.features(images, total)
        self.fid.reset()
        self.kid.reset()
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # KID's subsets: the same draw at every evaluation
            kid_mean, kid_std = self.kid.compute()
        return {
            "eval/fid": float(self.fid.compute()),
            "eval/kid_mean": float(kid_mean),
            "eval/kid_std": float(kid_std),
            "eval/fid_samples": total,
        } | self.recognition(features)

    @torch.inference_mode()
    def recognition(self, features: torch.Tensor) -> dict[str, float]:
        """How many images the domain classifier recognises, and how evenly over its classes,
        from the features FID already has (the head is one linear layer); {} without a head."""
        if self.head is None:
            return {}
        logits = self.head(features)
        return {
            "eval/confident": confident_fraction(logits),
            "eval/class_entropy": class_entropy(logits),
        }


def build_extractor(fid_cfg, data: ImageData, device: torch.device) -> tuple[nn.Module, dict]:
    """The configured feature extractor and what to report about it."""
    if fid_cfg.features == "domain":
        net, accuracy = domain_classifier(
            data, device, fid_cfg.cache_dir, fid_cfg.classifier_epochs
        )
        return ClassifierFeatures(net), {"eval/fid_classifier_accuracy": accuracy}
    if fid_cfg.features == "inception":
        return InceptionFeatures(fid_cfg.weights).to(device), {}
    raise ConfigError(f"fid.features={fid_cfg.features}: use domain or inception")
