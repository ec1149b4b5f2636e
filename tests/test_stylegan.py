"""StyleGAN2, piece by piece (lab/gen/stylegan*.py), then on the runner: trains, resumes to
the same state, samples with truncation, and learns."""

import itertools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lab import sample
from lab.compute import Compute
from lab.config import instantiate
from lab.errors import ConfigError
from lab.gen import stylegan
from lab.gen.data import to_float, to_uint8
from lab.gen.losses import r1_penalty
from lab.gen.stylegan import StyleGAN, ema_decay, ema_update, lazy_adam, mix_styles
from lab.gen.stylegan_layers import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    modulated_conv2d,
    upsample,
)
from lab.gen.stylegan_nets import (
    DiscriminatorBlock,
    StyleDiscriminator,
    StyleGenerator,
    resolutions,
)
from lab.gen.task import build_model
from tests.conftest import assert_one_line_error, compose_config, lab, read_summary
from tests.test_gen import TINY, _write_idx, assert_beats_half_the_classes
from tests.test_gen_runs import (
    _checkpoint,
    _run_in_process,
    assert_resumes_exactly,
    one_thread,  # noqa: F401 (a fixture: threads back after the runs)
)

CPU = Compute(torch.device("cpu"))


def _model(shape=(1, 16, 16), **hyperparameters) -> StyleGAN:
    torch.manual_seed(0)
    return StyleGAN(shape, CPU, **({"width": 8, "z_dim": 16, "w_dim": 16} | hyperparameters))


# -- the layers ----------------------------------------------------------------------------


def test_equalized_lr_scales_the_stored_weights_at_run_time():
    torch.manual_seed(0)
    layer = EqualLinear(400, 300, lr_mul=0.01)
    # Stored at N(0, 1/m²); the forward pass multiplies by m / sqrt(fan_in) = 0.01 / 20.
    assert float(layer.weight.detach().std()) == pytest.approx(100, rel=0.02)
    x = torch.randn(5, 400)
    expected = x @ (layer.weight * 0.01 / 20).T + 0.01 * layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # The gain is applied at every call, not baked in at init: doubling the stored weights
    # doubles the output, and the stored weights' gradient carries the gain.
    with torch.no_grad():
        layer.weight.mul_(2)
    assert torch.allclose(layer(x), 2 * expected - 0.01 * layer.bias, atol=1e-5)
    layer(x).sum().backward()
    assert torch.allclose(layer.weight.grad, (0.01 / 20) * x.sum(0).expand(300, -1), atol=1e-6)

    conv = EqualConv2d(4, 2, 3, activate=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    # An interior pixel of ones sees 4 · 9 ones at gain 1 / sqrt(4 · 9): 36 / 6 = 6.
    assert float(conv(torch.ones(1, 4, 5, 5))[0, 0, 2, 2].detach()) == pytest.approx(6.0)


def test_demodulation_keeps_unit_output_variance_whatever_the_styles():
    torch.manual_seed(0)
    x = torch.randn(16, 32, 12, 12)
    weight = torch.randn(24, 32, 3, 3) * 7
    styles = torch.randn(16, 32).exp() * 5
    out = modulated_conv2d(x, weight, styles)[..., 1:-1, 1:-1]  # away from the zero padding
    assert float(out.std()) == pytest.approx(1.0, abs=0.05)
    assert torch.allclose(
        modulated_conv2d(x, weight, styles * 10), modulated_conv2d(x, weight, styles), atol=1e-4
    )
    # Without demodulation the styles scale the output.
    plain = modulated_conv2d(x, weight, styles, demodulate=False)
    assert float(plain.std()) > 50
    assert torch.allclose(
        modulated_conv2d(x, weight, 10 * styles, demodulate=False), 10 * plain, rtol=1e-4, atol=0.1
    )


def test_modulated_conv_is_a_per_sample_conv_with_the_papers_weights():
    """Eqs. 1 and 3, written out: w' = s w, w'' = w' / sqrt(Σ w'² + ε), one kernel per image."""
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    for i in range(3):
        w1 = weight * styles[i][None, :, None, None]
        w2 = w1 / (w1.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        expected = F.conv2d(x[i : i + 1], w2, padding=1)
        assert torch.allclose(modulated_conv2d(x, weight, styles)[i : i + 1], expected, atol=1e-5)
    # Upsampling (a transposed conv, then the [1, 3, 3, 1] filter) is bilinear upsampling
    # followed by the conv with the kernel flipped, away from the borders.
    up = modulated_conv2d(x, weight, styles, demodulate=False, up=True)
    flipped = weight.flip(-1, -2)[None] * styles[:, None, :, None, None]
    for i in range(3):
        expected = F.conv2d(upsample(x[i : i + 1]), flipped[i], padding=1)
        assert torch.allclose(up[i : i + 1, :, 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-4)


def test_noise_strength_zero_makes_the_output_deterministic_for_a_fixed_w():
    torch.manual_seed(0)
    G = StyleGenerator((1, 16, 16), 16, 16, 8, 64, 2).eval()
    ws = G.styles(torch.randn(4, 16))
    strengths = [m.strength for m in G.modules() if hasattr(m, "strength")]
    assert len(strengths) == 5 and all(float(s.detach()) == 0 for s in strengths)  # 1 + 2 + 2 convs
    assert torch.equal(G.synthesis(ws, "random"), G.synthesis(ws, "random"))
    with torch.no_grad():
        for s in strengths:
            s.fill_(0.5)
    assert not torch.equal(G.synthesis(ws, "random"), G.synthesis(ws, "random"))
    assert torch.equal(G.synthesis(ws, "const"), G.synthesis(ws, "const"))
    same = [G.synthesis(ws, "random", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same)


def test_mapping_tracks_the_mean_w_and_truncation_pulls_towards_it():
    torch.manual_seed(0)
    mapping = MappingNetwork(8, 8, depth=2)
    z = torch.randn(6, 8)
    w = mapping(z)  # training mode: w̄ <- lerp(mean w, w̄, 0.995) from 0
    assert torch.allclose(mapping.w_avg, 0.005 * w.detach().mean(0))
    mapping.eval()
    w_eval = mapping(z)
    assert torch.allclose(mapping.w_avg, 0.005 * w.detach().mean(0))  # eval leaves it
    half = mapping.truncate(w_eval, 0.5)
    assert torch.allclose(half - mapping.w_avg, 0.5 * (w_eval - mapping.w_avg))
    assert torch.allclose(mapping.truncate(w_eval, 1.0), w_eval)


def test_r1_penalty_by_hand():
    # D(x) = <w, x> has gradient w everywhere: ||w||² = 3² + 4² = 25.
    w = torch.tensor([3.0, 4.0]).reshape(1, 1, 1, 2)
    penalty = r1_penalty(lambda x: (x * w).flatten(1).sum(1), torch.randn(3, 1, 1, 2))
    assert penalty.item() == pytest.approx(25.0)
    # D(x) = ||x||² / 2 has gradient x: the mean of ||x||² over the batch, (4 + 1) / 2.
    real = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 1, 2)
    penalty = r1_penalty(lambda x: 0.5 * x.flatten(1).square().sum(1), real)
    assert penalty.item() == pytest.approx(2.5) and penalty.requires_grad


# -- the model's training rules ------------------------------------------------------------


def test_ema_decay_and_update_by_hand():
    # A half-life of 1e6 images ramped to 5% of the 1,000 seen: h = 50, β = 0.5^(10 / 50).
    assert ema_decay(1000, 10, 1e6, 0.05) == pytest.approx(0.5**0.2)
    assert ema_decay(10**9, 10, 1e6, 0.05) == pytest.approx(0.5 ** (10 / 1e6))
    assert ema_decay(1000, 10, 1e6, None) == pytest.approx(0.5 ** (10 / 1e6))
    average, current = MappingNetwork(2, 2, 1), MappingNetwork(2, 2, 1)
    with torch.no_grad():
        for a, c in zip(average.parameters(), current.parameters(), strict=True):
            a.fill_(1.0), c.fill_(5.0)
        current.w_avg.fill_(7.0)
    ema_update(average, current, beta=0.75)
    assert all(torch.all(p == 2.0) for p in average.parameters())  # 0.75 · 1 + 0.25 · 5
    assert torch.all(average.w_avg == 7.0)  # buffers are copied, not averaged


def test_the_ema_generator_follows_the_generator_at_the_ramped_decay():
    model = _model()
    G, ema = model.nets["generator"], model.nets["generator_ema"]
    before = [p.detach().clone() for p in ema.parameters()]
    model.update(lambda: torch.rand(16, 1, 16, 16) * 2 - 1)
    beta = ema_decay(16, 16, model.ema_half_life, model.ema_rampup)  # 16 images: h = 0.8
    for old, new, p in zip(before, ema.parameters(), G.parameters(), strict=True):
        assert torch.allclose(new, beta * old + (1 - beta) * p.detach(), atol=1e-6)


def test_lazy_r1_runs_every_k_steps_with_k_times_the_weight(monkeypatch):
    model = _model(r1_gamma=0.5, r1_interval=3, lr=2.5e-3)
    penalties, steps = [], []

    def counted_r1(critic, real):
        penalties.append(r1_penalty(critic, real))
        return penalties[-1]

    def recorded_step(loss, net, step=model._step):
        steps.append((net, float(loss.detach())))
        step(loss, net)

    monkeypatch.setattr(stylegan, "r1_penalty", counted_r1)
    monkeypatch.setattr(model, "_step", recorded_step)
    regularised = []
    for i in range(7):
        before = len(penalties)
        model.update(lambda: torch.rand(16, 1, 16, 16) * 2 - 1)
        regularised += [i] * (len(penalties) - before)
    assert regularised == [0, 3, 6]
    # A penalty step follows the main discriminator step and descends γ/2 · k · R1.
    extra = [loss for (a, _), (b, loss) in itertools.pairwise(steps) if a == b == "discriminator"]
    assert extra == pytest.approx([0.5 / 2 * 3 * float(p.detach()) for p in penalties])
    # Adam's settings make up for the extra steps: lr · k/(k+1), β^(k/(k+1)).
    lr, betas = lazy_adam(2.5e-3, (0.0, 0.99), 3)
    assert lr == pytest.approx(2.5e-3 * 0.75) and betas == pytest.approx((0.0, 0.99**0.75))
    group = model.optimizers["discriminator"].param_groups[0]
    assert group["lr"] == pytest.approx(lr) and group["betas"] == pytest.approx(betas)
    assert model.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2.5e-3)


def test_style_mixing_takes_the_coarse_layers_from_one_code_and_the_fine_from_another():
    ws, other = torch.zeros(2, 6, 3), torch.ones(2, 6, 3)
    assert mix_styles(ws, other, 2)[:, :, 0].tolist() == [[0, 0, 1, 1, 1, 1]] * 2
    model = _model()
    model.train(False)
    rows, columns = model.latent(2), model.latent(3)
    grid = model.style_mixing_grid(rows, columns)
    assert grid.shape == (3 * 4, 1, 16, 16)
    grid = grid.reshape(3, 4, 1, 16, 16)
    assert torch.all(grid[0, 0] == 1)  # the blank corner
    assert torch.equal(grid[0, 1:], model.generate(columns))  # the column sources on top
    assert torch.equal(grid[1:, 0], model.generate(rows))  # the row sources down the left
    G = model.nets["generator_ema"]
    cutoff = G.synthesis.mixing_cutoff
    assert cutoff == 3  # 16 px: the 4 and 8 px blocks (3 convs) are coarse, 16 px is fine
    mixed = mix_styles(G.styles(rows[1:2]), G.styles(columns[2:3]), cutoff)
    assert torch.allclose(grid[2, 3], model._draw(mixed)[0], atol=1e-5)
    assert not torch.allclose(grid[2, 3], grid[2, 0]) and not torch.allclose(grid[2, 3], grid[0, 3])


def test_training_with_style_mixing_draws_a_second_code(monkeypatch):
    model = _model(style_mixing=1.0)
    codes = []
    latent = model.latent
    monkeypatch.setattr(model, "latent", lambda n, g=None: codes.append(n) or latent(n, g))
    model.update(lambda: torch.rand(16, 1, 16, 16) * 2 - 1)
    assert codes == [16] * 2  # two codes for the one fake batch both steps score
    model = _model(style_mixing=0.0)
    codes.clear()
    monkeypatch.setattr(model, "latent", lambda n, g=None: codes.append(n) or latent(n, g))
    model.update(lambda: torch.rand(16, 1, 16, 16) * 2 - 1)
    assert codes == [16]


def test_truncation_pulls_samples_towards_the_mean_image():
    model = _model()
    model.update(lambda: torch.rand(16, 1, 16, 16) * 2 - 1)  # a w̄ away from 0
    model.train(False)
    z = model.latent(8, torch.Generator().manual_seed(0))
    assert torch.equal(model.generate_truncated(z, 1.0), model.generate(z))
    mean_image = model._draw(model.nets["generator_ema"].styles(z, psi=1e-9))
    far, near = (model.generate_truncated(z, psi) for psi in (1.0, 0.3))
    assert (near - mean_image).abs().mean() < (far - mean_image).abs().mean()
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=f"truncation={bad}"):
            model.generate_truncated(z, bad)


@pytest.mark.parametrize(
    ("shape", "sides"),
    [
        ((1, 8, 8), [4, 8]),
        ((1, 16, 16), [4, 8, 16]),
        ((1, 28, 28), [7, 14, 28]),
        ((3, 32, 32), [4, 8, 16, 32]),
    ],
)
@pytest.mark.parametrize("architecture", ["resnet", "orig"])
def test_nets_build_at_each_supported_size(shape, sides, architecture):
    assert resolutions(shape) == sides
    G = StyleGenerator(shape, 16, 16, 8, 64, 2)
    D = StyleDiscriminator(shape, 8, 64, 4, architecture)
    images = G(torch.randn(6, 16))
    assert images.shape == (6, *shape) and D(images).shape == (6, 1)
    assert G.synthesis.num_ws == 2 * len(sides)  # 1 conv + 2 per block after, + the last toRGB


@pytest.mark.parametrize("side", [16, 14])  # 14 -> 7: the 28 px nets' odd side
def test_the_resnet_block_adds_a_blurred_half_size_skip_scaled_by_root_half(side):
    torch.manual_seed(0)
    block = DiscriminatorBlock(4, 8)  # model.d_architecture=resnet
    with torch.no_grad():  # the residual branch off: lrelu(0 + 0) = 0
        block.conv1.weight.zero_()
    x = torch.randn(2, 4, side, side)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = (taps[:, None] * taps[None, :] / 64).expand(4, 1, 4, 4)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel, groups=4)  # filter at full resolution,
    skip = F.conv2d(blurred[..., ::2, ::2], block.skip.weight / 2)  # keep every other pixel
    assert torch.allclose(block(x), skip * 0.5**0.5, atol=1e-6)  # He constant 1/sqrt(4)


@pytest.mark.parametrize("shape", [(1, 9, 9), (1, 16, 12)])
def test_sizes_the_nets_cannot_build_are_refused(shape):
    with pytest.raises(ConfigError, match="stylegan"):
        resolutions(shape)


def _cifar10_batches(folder) -> None:
    """CIFAR-10's python batches (two random images each) in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(
    ("dataset", "size", "shape"),
    [("mnist", 28, (1, 28, 28)), ("fashion_mnist", 32, (1, 32, 32)), ("cifar10", 32, (3, 32, 32))],
)
def test_it_trains_and_draws_its_figures_on_every_data_set(tmp_path, dataset, size, shape):
    """28 px runs natively (7 -> 14 -> 28); 1 or 3 channels. Local files stand in for the sets."""
    if dataset == "cifar10":
        _cifar10_batches(tmp_path / "cifar-10-batches-py")
    else:
        rng = np.random.default_rng(0)
        for prefix in ("train", "t10k"):
            _write_idx(
                tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (8, 28, 28)), gz=True
            )
            _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, 8), gz=True)
    cfg = compose_config(
        "model=stylegan", f"dataset={dataset}", f"dataset.root={tmp_path}", f"dataset.size={size}"
    )
    data = instantiate(cfg.dataset)
    assert data.shape == shape
    torch.manual_seed(0)
    model = build_model(cfg.model, data.shape, CPU)
    metrics = model.update(lambda: to_float(data.train[:8]))
    assert all(torch.isfinite(v) for v in metrics.values())
    model.train(False)
    with torch.inference_mode():
        assert model.generate(model.latent(4)).shape == (4, *shape)
        figures = model.figures(to_float(data.test))
    assert figures["style_mixing"][0].shape == (49, *shape)
    assert figures["noise"][0].shape == (64, *shape)


# -- on the runner ---------------------------------------------------------------------------

TINY_STYLEGAN = ["model=stylegan", *TINY, "model.width=8", "model.batch_size=32"]


@pytest.mark.usefixtures("one_thread")
def test_a_tiny_run_resumes_exactly(tmp_path):
    """Stopped at step 20 and resumed, a run ends as an uninterrupted one does: nets, EMA,
    optimizers, the mean w and the lazy-R1 step count (R1 steps at 0, 16 and 32)."""
    a = assert_resumes_exactly(tmp_path, *TINY_STYLEGAN, "threads=1")
    assert a["task"]["model"]["updates"] == 40
    assert {"generator", "generator_ema", "discriminator"} == a["task"]["model"]["nets"].keys()


def test_a_tiny_run_writes_its_figures_and_samples_with_truncation(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_STYLEGAN, "threads=1")
    assert result.returncode == 0, result.stderr
    assert read_summary(run)["algo"] == "stylegan"
    media = {p.name for p in (run / "media").iterdir()}
    for kind in ("samples", "truncated", "style_mixing", "noise"):
        assert f"{kind}_000000020.png" in media, kind

    out = tmp_path / "drawn"
    sample.main([str(run), "n=10", "seed=5", f"out={out}", "truncation=0.7"])
    sample.main([str(run), "n=10", "seed=5", f"out={out}"])
    truncated = np.load(out / "samples_10_seed5_psi0.7.npz")
    plain = np.load(out / "samples_10_seed5.npz")
    assert np.array_equal(truncated["z"], plain["z"])
    assert not np.array_equal(truncated["images"], plain["images"])
    model = build_model(compose_config(*TINY_STYLEGAN).model, (1, 16, 16), CPU)
    model.load_state_dict(_checkpoint(run, "best.pt")["task"]["model"])
    model.train(False)
    with torch.inference_mode():
        images = to_uint8(model.generate_truncated(torch.from_numpy(truncated["z"]), 0.7))
    assert np.array_equal(images.numpy(), truncated["images"])


@pytest.mark.usefixtures("one_thread")
def test_truncation_is_refused_by_a_model_without_a_mapping_network(tmp_path, capsys):
    run, overrides = tmp_path / "dcgan", ["model=dcgan", *TINY, "model.total_steps=1", "threads=1"]
    _run_in_process(run, *overrides)
    (run / ".hydra").mkdir()  # what Hydra writes for a run from the command line
    OmegaConf.save(compose_config(*overrides), run / ".hydra" / "config.yaml")
    for option, needle in (("truncation=0.7", "truncation=0.7"), ("truncation=1.5", "(0, 1]")):
        with pytest.raises(SystemExit) as stopped:
            sample.main([str(run), "n=4", f"out={tmp_path / 'out'}", option])
        assert stopped.value.code == 2
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and needle in errors[0] and "truncation" in errors[0], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["model=stylegan", "dataset.size=9"], ["dataset.size=9", "stylegan"]),
        (["model=stylegan", "model.truncation=0"], ["model.truncation=0", "(0, 1]"]),
        (["model=dcgan", "+model.truncation=0.7"], ["model.truncation"]),
    ],
)
def test_bad_stylegan_input_is_one_line(tmp_path, overrides, needles):
    result = lab(tmp_path / "run", *overrides)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("hyperparameters", "key"),
    [
        ({"style_mixing": 1.5}, "model.style_mixing=1.5"),
        ({"r1_gamma": -1.0}, "model.r1_gamma=-1.0"),
        ({"mapping_depth": 0}, "model.mapping_depth=0"),
        ({"ema_rampup": 0.0}, "model.ema_rampup=0.0"),
        ({"d_architecture": "skip"}, "model.d_architecture=skip"),
    ],
)
def test_bad_hyperparameters_name_their_key(hyperparameters, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _model(**hyperparameters)


@pytest.mark.slow
def test_fid_separates_a_trained_stylegan_from_bad_samples(tmp_path):
    """1,200 steps of the default settings (~80 s on one thread) take StyleGAN to 19.0, 4.8x
    the floor of 4.0 (500 samples): half the FID of real digits of classes 0 to 4 only (39.8),
    from 3,746 untrained."""
    assert_beats_half_the_classes(tmp_path, 1200, "model=stylegan")
