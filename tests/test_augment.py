"""Differentiable augmentation (lab/gen/augment.py) alone and inside every GAN."""

import pytest
import torch

from lab.compute import Compute
from lab.errors import ConfigError
from lab.gen import augment
from lab.gen.augment import DiffAugment, color, cutout, translation
from lab.gen.gan import GAN, WGANGP
from lab.gen.stylegan import StyleGAN
from lab.gen.task import build_model
from tests.conftest import assert_one_line_error, compose_config, lab
from tests.test_gen import TINY

CPU = Compute(torch.device("cpu"))
ALL = ["translation", "cutout", "color"]


def _images(n=8, shape=(3, 16, 16)) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, *shape) * 2 - 1


@pytest.mark.parametrize("names", [["translation"], ["cutout"], ["color"], ALL])
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 28, 28), (3, 32, 32)])
def test_shapes_are_kept_and_gradients_reach_the_input(names, shape):
    x = _images(6, shape).requires_grad_(True)
    y = DiffAugment(names)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.equal(y, x)  # it did something
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("names", [[], None, ()])
def test_an_empty_list_is_the_identity(names):
    x = _images()
    t = DiffAugment(names)
    assert t(x) is x and not t


def test_translation_shifts_whole_images_and_fills_with_zeros(monkeypatch):
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    shifts = iter([torch.tensor([[[1]], [[0]]]), torch.tensor([[[0]], [[-1]]])])  # y, then x
    monkeypatch.setattr(augment.torch, "randint", lambda *a, **k: next(shifts))
    y = translation(x, ratio=1 / 4)  # shifts of up to one pixel at 4 px
    # Image 0 moves down a row (its top row zero), image 1 left a column (its right column zero).
    assert torch.equal(y[0, 0, 0], torch.zeros(4)) and torch.equal(y[0, 0, 1:], x[0, 0, :3])
    assert torch.equal(y[1, 0, :, 3], torch.zeros(4)) and torch.equal(
        y[1, 0, :, :3], x[1, 0, :, 1:]
    )


def test_translation_shifts_by_at_most_an_eighth_of_the_side():
    x = torch.zeros(200, 1, 16, 16)
    x[:, :, 7, 7] = 1  # one lit pixel: where it lands is the shift
    rows, cols = translation(x)[:, 0].nonzero()[:, 1:].T
    assert set((rows - 7).tolist()) == set((cols - 7).tolist()) == {-2, -1, 0, 1, 2}


def test_cutout_zeroes_one_square_of_half_the_side(monkeypatch):
    x = torch.ones(1, 2, 8, 8)
    offsets = iter([torch.tensor([[[4]]]), torch.tensor([[[0]]])])  # centre row 4, column 0
    monkeypatch.setattr(augment.torch, "randint", lambda *a, **k: next(offsets))
    y = cutout(x)
    # A 4 x 4 square at rows 2..5, columns -2..1: clipped to columns 0 and 1, both channels.
    expected = torch.ones(8, 8)
    expected[2:6, 0:2] = 0
    assert torch.equal(y[0, 0], expected) and torch.equal(y[0, 1], expected)


def test_color_by_hand(monkeypatch):
    # Brightness +0.25, saturation x2 around the channel mean, contrast x0.5 around the mean.
    draws = iter([torch.full((1, 1, 1, 1), v) for v in (0.75, 1.0, 0.0)])
    monkeypatch.setattr(augment.torch, "rand", lambda *a, **k: next(draws))
    x = torch.tensor([[0.0, 0.2], [0.4, 0.6]]).reshape(1, 2, 1, 2)
    bright = x + 0.25  # [[0.25, 0.45], [0.65, 0.85]]; channel means 0.45, 0.65
    grey = bright.mean(dim=1, keepdim=True)
    saturated = (bright - grey) * 2 + grey
    expected = (saturated - saturated.mean()) * 0.5 + saturated.mean()
    assert torch.allclose(color(x), expected)


def test_unknown_names_are_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"model.augment=\['bogus'\].*translation, cutout, color"):
        DiffAugment(["bogus"])
    assert DiffAugment("translation").names == ["translation"]  # a bare name on the CLI


def test_the_order_is_the_papers_whatever_the_lists():
    assert DiffAugment(["cutout", "color", "translation"]).names == [
        "color",
        "translation",
        "cutout",
    ]


@pytest.mark.parametrize(
    ("model_cls", "extra", "calls"),
    [
        (GAN, {}, 3),  # real, fake, the generator's step
        (WGANGP, {"n_critic": 2}, 2 * 3 + 1),  # real, fake and the penalty's interpolates
        (StyleGAN, {"r1_interval": 1}, 4),  # real, fake, R1's reals, the generator's step
    ],
)
def test_every_gan_shows_its_discriminator_augmented_images_only(
    model_cls, extra, calls, monkeypatch
):
    """Real and fake batches, the generator's step and the penalties all go through T."""
    torch.manual_seed(0)
    model = model_cls((1, 16, 16), CPU, z_dim=8, width=8, augment=["translation"], **extra)
    seen = []
    D = model.nets["discriminator"]
    real_forward = D.forward

    def forward(x):
        seen.append(x.detach().clone())
        return real_forward(x)

    monkeypatch.setattr(D, "forward", forward)
    marker = 5.0  # no augmented image of a [-1, 1] batch or of a tanh output holds it unchanged
    monkeypatch.setattr(model, "augment", lambda x: x * 0 + marker)  # keeps the graph
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    model.update(lambda: real)
    assert len(seen) == calls
    assert all(torch.all(x == marker) for x in seen)


def test_augment_is_a_key_of_every_gan_config():
    for name in ("dcgan", "wgan_gp", "stylegan"):
        cfg = compose_config(f"model={name}", "model.augment=[translation,cutout,color]")
        model = build_model(cfg.model, (1, 16, 16), CPU)
        assert model.augment.names == ["color", "translation", "cutout"]


def test_bogus_augmentation_is_a_one_line_error(tmp_path):
    result = lab(tmp_path, "model=dcgan", "model.augment=[translation,bogus]", *TINY)
    assert_one_line_error(result, "model.augment=", "'bogus'", "translation, cutout, color")
