"""Generative models on the runner: each model runs, learns, resumes and samples."""

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from lab.compute import Compute
from lab.errors import ConfigError
from lab.gen import data as datasets
from lab.gen.task import GenTask
from tests.conftest import (
    assert_one_line_error,
    compose_config,
    lab,
    read_metrics,
    read_summary,
)
from tests.test_fid import missing_half_the_classes

# A few steps of any model, with FID on few samples: a smoke run of a few seconds.
TINY_BUDGET = [
    "model.total_steps=20",
    "eval.interval=10",
    "log_interval=5",
    "checkpoint.interval=10",
    "fid.samples=200",
    "fid.kid_subset_size=100",
    "fid.kid_subsets=5",
]
TINY = [*TINY_BUDGET, "model.width=16"]  # a small net for every model with convolutions
# An RBM has no width: a small DBN instead, with short sampling chains.
SMALL_NET = {"rbm": ["model.layers=[32,16]", "model.sample_steps=50"]}


@pytest.mark.parametrize("model", ["dcgan", "wgan_gp", "stylegan", "vae", "autoencoder", "rbm"])
def test_each_model_trains_and_writes_a_summary(tmp_path, model):
    small = SMALL_NET.get(model, ["model.width=16"])
    result = lab(tmp_path, f"model={model}", *TINY_BUDGET, *small)
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path)
    assert (summary["status"], summary["family"], summary["algo"]) == (
        "completed",
        "generative",
        model,
    )
    assert summary["task"] == "digits" and summary["steps"] == 20
    assert summary["metrics"]["eval/fid_samples"] == 200
    assert summary["metrics"]["eval/fid"] > 0 and summary["metrics"]["eval/fid_floor"] >= 0
    assert summary["threshold"]["metric"] == "eval/fid"
    media = {p.name for p in (tmp_path / "media").iterdir()}
    assert {"samples_000000010.png", "samples_000000020.png"} <= media
    if model in ("vae", "autoencoder"):
        assert {"reconstructions_000000020.png", "interpolations_000000020.png"} <= media
        assert "eval/recon" in summary["metrics"]
    if model == "rbm":
        assert {"chains_000000020.png", "filters_000000020.png"} <= media
        assert "eval/pseudo_log_likelihood" in summary["metrics"]
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "perf/images_per_s" in r]
    assert train_rows and all(r["perf/images_per_s"] > 0 for r in train_rows)
    assert all("perf/env_steps_per_s" not in r for r in rows)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


SMALL_FID = ["fid.samples=200", "fid.kid_subset_size=100"]  # a quick scorer for in-process tasks


def _task(*overrides: str) -> GenTask:
    cfg = compose_config(*overrides)
    torch.manual_seed(cfg.seed)
    return GenTask(cfg, Compute(torch.device("cpu")))


def assert_beats_half_the_classes(tmp_path, steps: int, *overrides: str) -> None:
    """``steps`` of a model (seed 0, FID on 500 samples) beat real digits of classes 0 to 4
    only by a quarter, come within 8 floors, and fall 20x from the untrained model's FID."""
    task = _task(*overrides, "fid.samples=500", "seed=0")
    floor = task.scorer.floor["eval/fid_floor"]
    half = missing_half_the_classes(datasets.digits(), 500)
    half_fid = task.scorer.score(lambda i, n: half[i : i + n])["eval/fid"]
    untrained = task.evaluate(tmp_path)[0]["eval/fid"]
    task.train_step(steps)
    trained = task.evaluate(tmp_path)[0]["eval/fid"]
    assert trained < untrained / 20, (trained, untrained)
    assert trained < 0.75 * half_fid, (trained, half_fid)
    assert trained < 8 * floor, (trained, floor)


@pytest.mark.slow
def test_dcgan_beats_real_images_missing_half_their_classes(tmp_path):
    """800 steps take DCGAN to within a few floors: measured 20.3 (5.2x the floor of 3.9),
    half the FID of real digits of classes 0 to 4 only (40), from 1,057 untrained."""
    assert_beats_half_the_classes(tmp_path, 800, "model=dcgan", "model.width=32")


def test_vae_elbo_improves(tmp_path):
    task = _task("model=vae", "model.width=16", *SMALL_FID)
    before = task.evaluate(tmp_path)[0]
    metrics = task.train_step(300)
    after = task.evaluate(tmp_path)[0]
    assert after["eval/elbo"] > before["eval/elbo"] + 20, (before["eval/elbo"], after["eval/elbo"])
    assert after["eval/recon"] < before["eval/recon"]
    assert metrics["train/elbo"] == pytest.approx(-(metrics["train/recon"] + metrics["train/kl"]))


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_beta_weights_the_kl_term(beta):
    """The loss is -E[log p(x | z)] + beta KL(q(z | x) || N(0, I)) at z = mu + σ ε, and the
    logged ELBO is the beta = 1 one, with the terms computed by torch.distributions."""
    from torch.distributions import Bernoulli, Normal, kl_divergence

    task = _task("model=vae", "model.width=16", f"model.beta={beta}", *SMALL_FID)
    model, x = task.model, task.batches()
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        posterior = Normal(mu, (0.5 * logvar).exp())
        torch.manual_seed(7)
        z = mu + posterior.scale * torch.randn_like(mu)
        pixels = Bernoulli(logits=model.decode_logits(z), validate_args=False)  # targets in [0, 1]
        recon = -pixels.log_prob((x + 1) / 2).sum(dim=(1, 2, 3)).mean()
        kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(dim=1).mean()
    torch.manual_seed(7)  # the same ε inside the update
    metrics = model.update(lambda: x)
    assert float(metrics["train/recon"]) == pytest.approx(float(recon), rel=1e-5)
    assert float(metrics["train/kl"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(metrics["train/loss"]) == pytest.approx(float(recon + beta * kl), rel=1e-5)
    assert float(metrics["train/elbo"]) == pytest.approx(float(-(recon + kl)), rel=1e-5)


def test_spectral_norm_keeps_every_discriminator_layer_at_unit_norm():
    """``model.d_norm=spectral`` (SN-GAN): each conv and linear weight of the discriminator,
    as a matrix, has largest singular value 1 once power iteration has run a few updates;
    the DCGAN initialisation (std 0.02) still sets the weights it is computed from."""
    from torch import nn

    task = _task("model=dcgan", "model.width=16", "model.d_norm=spectral", *SMALL_FID)
    D = task.model.nets["discriminator"]
    layers = [m for m in D.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    raw = torch.cat([m.parametrizations.weight.original.detach().flatten() for m in layers])
    assert float(raw.std()) == pytest.approx(0.02, rel=0.1)
    for _ in range(20):  # one power iteration per training forward, as the weights move
        task.model.update(task.batches)
    with torch.no_grad():
        norms = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2) for m in layers]
    assert all(float(n) == pytest.approx(1.0, abs=0.1) for n in norms), norms  # without: 0.15-0.46


@pytest.mark.parametrize("model", ["dcgan", "wgan_gp", "stylegan"])
def test_lr_anneal_takes_every_rate_linearly_to_zero(model):
    """``model.lr_anneal``: after k of T generator steps each optimizer's rate is its own
    initial rate (StyleGAN's discriminator's, lazy-R1 scaled, included) times 1 - k/T, and a
    model loaded from a checkpoint goes on from the same point of the schedule."""
    overrides = [f"model={model}", "model.width=8", "model.batch_size=16", *SMALL_FID]
    overrides += ["model.total_steps=4", "model.lr_anneal=true"]

    def rates(task: GenTask) -> list[float]:
        return [g["lr"] for o in task.model.optimizers.values() for g in o.param_groups]

    task = _task(*overrides)
    initial = rates(task)
    assert len(set(initial)) == (2 if model == "stylegan" else 1)
    for _ in range(2):
        task.model.update(task.batches)
    assert rates(task) == pytest.approx([r / 2 for r in initial])
    loaded = _task(*overrides)
    loaded.model.load_state_dict(task.model.state_dict())
    for t in (task, loaded):
        for _ in range(2):
            t.model.update(t.batches)
        assert rates(t) == [0.0] * len(initial)


def test_a_gan_checkpoint_from_before_lr_anneal_loads_and_anneals():
    """Checkpoints written before ``lr_anneal`` have no step count and no ``initial_lr``: they
    load as step 0, with the rate they hold as the one to anneal from."""
    overrides = ["model=dcgan", "model.width=8", "model.batch_size=16", *SMALL_FID]
    state = _task(*overrides).model.state_dict()
    del state["updates"]
    for optimizer in state["optimizers"].values():
        for group in optimizer["param_groups"]:
            del group["initial_lr"]
    task = _task(*overrides, "model.total_steps=4", "model.lr_anneal=true")
    task.model.load_state_dict(state)
    task.model.update(task.batches)
    assert task.model.updates == 1
    rates = [g["lr"] for o in task.model.optimizers.values() for g in o.param_groups]
    assert rates == pytest.approx([5e-4 * 3 / 4] * 2)


def logged_rows(run_dir) -> list[dict]:
    """metrics.jsonl without wall-clock keys: what two identical runs share."""
    drop = ("time", "perf/")
    return [
        {k: v for k, v in row.items() if not k.startswith(drop)} for row in read_metrics(run_dir)
    ]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        result = lab(run, "model=dcgan", *TINY, "seed=3")
        assert result.returncode == 0, result.stderr
    assert logged_rows(runs[0]) == logged_rows(runs[1])
    other = tmp_path / "c"
    assert lab(other, "model=dcgan", *TINY, "seed=4").returncode == 0
    assert logged_rows(other) != logged_rows(runs[0])


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["model=dcgan", "dataset=mnist", "dataset.root=/nonexistent/mnist"],
            ["dataset.root=/nonexistent/mnist", "train-images-idx3-ubyte"],
        ),
        (
            ["model=dcgan", "dataset=cifar10", "dataset.root=/nonexistent"],
            ["dataset.root=/nonexistent", "data_batch_1"],
        ),
        (["model=dcgan", "dataset=image_folder"], ["dataset.root"]),
        (["model=dcgan", "fid.samples=5000"], ["fid.samples=5000", "fid.samples <= 898"]),
        (["model=dcgan", "fid.kid_subset_size=1000"], ["fid.kid_subset_size=1000"]),
        (["model=dcgan", "fid.features=inception"], ["fid.weights"]),
        (["model=dcgan", "model.lr=-1"], ["model.lr=-1"]),
        (["model=wgan_gp", "model.d_norm=batch"], ["model.d_norm=batch"]),
        (["model=dcgann"], ["model=dcgann", "dcgan, "]),
        (["dataset=digits"], ["dataset=", "model=dcgan"]),
    ],
)
def test_bad_generative_input_is_one_line(tmp_path, overrides, needles):
    result = lab(tmp_path / "run", *overrides)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "run").exists()


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_local_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n), gz)
    data = datasets.mnist(root=str(tmp_path), size=16)
    assert data.train.shape == (12, 1, 16, 16) and data.test.shape == (5, 1, 16, 16)
    assert data.train.dtype == torch.uint8 and data.train_labels.shape == (12,)
    native = datasets.mnist(root=str(tmp_path), size=28)
    raw = np.frombuffer(
        (gzip.decompress if gz else bytes)(
            (tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))).read_bytes()
        )[16:],
        dtype=np.uint8,
    ).reshape(12, 28, 28)
    assert np.array_equal(native.train[:, 0].numpy(), raw)


def test_cifar10_reads_the_python_batches(tmp_path):
    # CIFAR-10's layout: each row of `data` is 1,024 red values, then green, then blue, each
    # 32 x 32 in row-major order; labels run batch by batch, train batches 1 to 5 in order.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, labels = {}, {}
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rows[name] = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels[name] = [i % 3, (i + 1) % 3]
        batch = {b"data": rows[name], b"labels": labels[name]}
        (folder / name).write_bytes(pickle.dumps(batch))
    data = datasets.cifar10(root=str(tmp_path))
    assert data.train.shape == (10, 3, 32, 32) and data.test.shape == (2, 3, 32, 32)
    assert data.train_labels.tolist() == [y for i in range(1, 6) for y in labels[f"data_batch_{i}"]]
    assert data.num_classes == 3
    n, c, r, col = np.meshgrid(*map(np.arange, (2, 3, 32, 32)), indexing="ij")
    for image, name in ((data.train[8:], "data_batch_5"), (data.test, "test_batch")):
        expected = rows[name][n, 1024 * c + 32 * r + col]  # [image, channel, row, column]
        assert np.array_equal(image.numpy(), expected), name
    # One pixel by hand: green (channel 1), row 2, column 5 of the test set's second image.
    assert int(data.test[1, 1, 2, 5]) == rows["test_batch"][1, 1024 + 2 * 32 + 5]


def test_image_folder_reads_pngs_with_class_subfolders(tmp_path):
    from PIL import Image

    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 24), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = datasets.image_folder(root=str(tmp_path), size=16, test_fraction=0.2)
    assert data.train.shape == (8, 3, 16, 16) and data.test.shape == (2, 3, 16, 16)
    assert data.num_classes == 2
    with pytest.raises(ConfigError, match="no such folder"):
        datasets.image_folder(root=str(tmp_path / "missing"))


def test_digits_upscale_keeps_the_split_fixed():
    a, b = datasets.digits(size=8), datasets.digits(size=32)
    assert a.shape == (1, 8, 8) and b.shape == (1, 32, 32)
    assert torch.equal(a.train_labels, b.train_labels) and len(a.test) == 359
    json.dumps(a.shape)  # plain ints, as summaries and checkpoints need


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gan_on_cuda_with_channels_last(tmp_path, precision):
    result = lab(
        tmp_path, "model=dcgan", *TINY, "dataset.size=32", "device=cuda", f"precision={precision}"
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(tmp_path)
    assert summary["device"].startswith("cuda") and summary["metrics"]["eval/fid"] > 0
