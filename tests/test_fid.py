"""FID: the Fréchet distance against closed forms, and FID telling real from broken samples;
the domain classifier's recognition figures by hand and on real, blended and noise images."""

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
    class_entropy,
    confident_fraction,
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


def test_confident_fraction_and_class_entropy_by_hand():
    # Logits log(p) plus a per-row constant, which the softmax removes.
    probabilities = torch.tensor(
        [[0.95, 0.05], [0.05, 0.95], [0.6, 0.4], [0.4, 0.6]], dtype=torch.float64
    )
    logits = probabilities.log() + torch.tensor([[3.0], [-1.0], [0.0], [7.0]])
    assert confident_fraction(logits) == 0.5  # rows 0 and 1 reach 0.9
    assert confident_fraction(logits, threshold=0.55) == 1.0
    assert class_entropy(logits) == pytest.approx(math.log(2), rel=1e-12)  # mean (0.5, 0.5)
    # All four the same confident class: every sample passes, the classes collapse.
    # H(0.95, 0.05) = -(0.95 ln 0.95 + 0.05 ln 0.05) = 0.0487286 + 0.1497866
    same = probabilities[:1].log().expand(4, -1)
    assert confident_fraction(same) == 1.0
    assert class_entropy(same) == pytest.approx(0.1985152434, rel=1e-9)
    certain = torch.tensor([[0.0, -math.inf, -math.inf]] * 2)  # p = (1, 0, 0): 0 ln 0 is 0
    assert class_entropy(certain) == 0.0


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


def test_recognition_tells_real_digits_from_blends_and_noise(digits_scorer):
    """Real digits are recognised (97% at p >= 0.9) and cover the ten classes (entropy ~ ln 10);
    two digits averaged, or noise, are not. A blank image fools the softmax (confident on one
    class), which the entropy of the classes then gives away.

    Measured with this scorer's classifier: held-out real 0.96 to 0.97 confident, entropy 2.29 to
    2.30; blends of two different digits 0.46; uniform noise 0.38; blank images 1.0 confident,
    entropy 0.0.
    """
    data, scorer, _ = digits_scorer
    assert scorer.floor["eval/confident_real"] > 0.9
    assert scorer.floor["eval/class_entropy_real"] == pytest.approx(math.log(10), abs=0.05)

    def recognised(images: torch.Tensor) -> dict[str, float]:
        return scorer.score(lambda i, n: images[i : i + n], len(images))

    held_out, labels = held_out_real(data, 500)
    real = recognised(held_out[500:1000])
    first, second = held_out[:250], held_out[250:500]
    differ = labels[:250] != labels[250:500]
    blends = recognised(((first + second) / 2)[differ])
    noise = torch.rand(500, *data.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    uniform = recognised(noise)
    blank = recognised(-torch.ones(500, *data.shape))

    assert real["eval/confident"] > 0.9 and real["eval/class_entropy"] > 2.2, real
    assert blends["eval/confident"] < 0.7, blends
    assert uniform["eval/confident"] < 0.5, uniform
    assert blank["eval/class_entropy"] < 0.1, blank


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
    assert InceptionFeatures(str(path)).head is None  # ImageNet's classes are not the data's


def test_no_recognition_figures_without_a_class_head():
    class Corners(torch.nn.Module):  # 4 features and no head, as Inception (2048-d, slow here)
        num_features, head = 4, None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0, ::15, ::15].flatten(1)

    real = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    scorer = FIDScorer(Corners(), real, 10, 2, 5, CPU)
    assert "eval/confident_real" not in scorer.floor
    assert "eval/confident" not in scorer.score(lambda i, n: torch.rand(n, 1, 16, 16))
