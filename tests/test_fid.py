"""FID: the Fréchet distance against closed forms, and FID telling real from broken samples."""

import math

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from lab.errors import ConfigError
from lab.gen.classifier import domain_classifier
from lab.gen.data import digits, to_float
from lab.gen.fid import (
    ClassifierFeatures,
    FIDScorer,
    InceptionFeatures,
    PassThrough,
    frechet_distance,
)

CPU = torch.device("cpu")


def _random_rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)).double()
    )
    return q.double()


def test_frechet_distance_of_1d_gaussians():
    # W2(N(m1, s1^2), N(m2, s2^2))^2 = (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]])
    )
    assert d == pytest.approx(9.0 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_of_commuting_covariances():
    # Same eigenvectors: tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(a) - sqrt(b))^2
    q = _random_rotation(6, 0)
    a = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 9.0], dtype=torch.float64)
    b = torch.tensor([2.0, 1.0, 0.5, 3.0, 1.0, 1.0], dtype=torch.float64)
    mu1, mu2 = torch.arange(6.0).double(), torch.ones(6).double()
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = frechet_distance(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(float(expected), rel=1e-9)


def test_frechet_distance_is_symmetric_and_zero_on_identical_gaussians():
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(1)).double()
    sigma1 = x.T @ x / 50
    y = torch.randn(50, 5, generator=torch.Generator().manual_seed(2)).double()
    sigma2 = y.T @ y / 50 + torch.eye(5, dtype=torch.float64)
    mu = torch.zeros(5)
    assert frechet_distance(mu, sigma1, mu, sigma1) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, sigma1, mu + 1, sigma2) == pytest.approx(
        frechet_distance(mu + 1, sigma2, mu, sigma1), rel=1e-9
    )


def test_torchmetrics_fid_matches_the_pure_function():
    gen = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, 8, generator=gen), torch.randn(300, 8, generator=gen) * 1.5 + 0.3
    metric = FrechetInceptionDistance(feature=PassThrough(8))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    real, fake = real.double(), fake.double()
    expected = frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def digits_scorer():
    data = digits()
    net, accuracy = domain_classifier(data, CPU, str(_cache()), epochs=20)
    scorer = FIDScorer(ClassifierFeatures(net), data.all_images(), 500, 20, 200, CPU)
    return data, scorer, accuracy


def _cache():
    import os

    return os.environ["LAB_CACHE"]


def test_domain_classifier_reaches_95_percent_held_out_on_digits(digits_scorer):
    _, _, accuracy = digits_scorer
    assert accuracy >= 0.95


def held_out_real(data, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images (float) and labels outside a scorer's reference set: FIDScorer takes its first
    ``samples`` of a seed-0 permutation as the reference (and the next ``samples`` as the floor's
    other set, which these include)."""
    order = torch.randperm(len(data.all_images()), generator=torch.Generator().manual_seed(0))
    kept = order[samples:]
    labels = torch.cat([data.train_labels, data.test_labels])
    return to_float(data.all_images()[kept]), labels[kept]


def missing_half_the_classes(data, samples: int) -> torch.Tensor:
    """``samples`` real images of classes 0 to 4 only, none from the reference set."""
    images, labels = held_out_real(data, samples)
    return images[labels < 5][:samples]


def test_fid_separates_real_from_collapsed_and_noise(digits_scorer):
    """Real images score at the real-vs-real floor; mild flaws score well above it.

    Measured with this scorer (500 samples, floor 3.9): other real images 1.0x the floor (0.9
    to 1.2x over 8 random sets); Gaussian noise σ = 0.2 (pixels in [-1, 1]) 2.0x (1.8 to 2.5x);
    half the classes missing 10x (9 to 17x); one image repeated 80x; uniform noise 240x.
    """
    data, scorer, _ = digits_scorer
    floor = scorer.floor["eval/fid_floor"]
    assert 0 < floor < 10

    def fid(images: torch.Tensor) -> dict[str, float]:
        assert len(images) == 500
        return scorer.score(lambda i, n: images[i : i + n])

    held_out, _ = held_out_real(data, 500)
    real = held_out[500:1000]  # disjoint from the reference and from the floor's other set
    noisy = real + 0.2 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    real_fid = fid(real)["eval/fid"]
    noisy_fid = fid(noisy.clamp(-1, 1))["eval/fid"]
    half = fid(missing_half_the_classes(data, 500))
    collapsed = fid(to_float(data.train[:1]).expand(500, -1, -1, -1))["eval/fid"]
    uniform = torch.rand(500, *data.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1

    assert 0.7 * floor < real_fid < 1.4 * floor, (real_fid, floor)
    assert noisy_fid > 1.5 * max(floor, real_fid), (noisy_fid, real_fid, floor)
    assert half["eval/fid"] > 5 * floor, (half, floor)
    assert half["eval/kid_mean"] - 2 * half["eval/kid_std"] > scorer.floor["eval/kid_floor"]
    assert collapsed > 40 * floor and fid(uniform)["eval/fid"] > 40 * floor


def test_the_classifier_is_cached(digits_scorer, monkeypatch):
    import lab.gen.classifier as classifier

    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("retrained"))
    _, accuracy = domain_classifier(digits(), CPU, _cache(), epochs=20)
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    ("samples", "real", "kid", "needle"),
    [
        (1, 100, 1, "fid.samples=1"),
        (60, 100, 10, "fid.samples <= 50"),
        (40, 100, 41, "fid.kid_subset_size=41"),
    ],
)
def test_too_few_samples_are_clear_errors(samples, real, kid, needle):
    with pytest.raises(ConfigError, match=needle.replace("<", ".")):
        FIDScorer.check(samples, real, kid)


def test_inception_needs_a_local_weights_file(tmp_path):
    with pytest.raises(ConfigError, match=r"fid\.weights"):
        InceptionFeatures(None)
    with pytest.raises(ConfigError, match="no such file"):
        InceptionFeatures(str(tmp_path / "pt_inception.pth"))


def test_inception_runs_a_torchscript_file(tmp_path):
    class Stand_in(torch.nn.Module):  # the calling convention of NVIDIA's inception-2015-12-05.pt
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return x.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    path = tmp_path / "inception.pt"
    torch.jit.script(Stand_in()).save(str(path))
    features = InceptionFeatures(str(path))(torch.zeros(4, 1, 16, 16))
    assert features.shape == (4, 2048)
    assert math.isclose(float(features[0, 0]), 128.0)  # -1..1 mapped to 0..255: 0 -> 128
