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

# A few steps of any model, with FID on few samples: a smoke run of a few seconds.
TINY = [
    "model.total_steps=20",
    "model.width=16",
    "eval.interval=10",
    "log_interval=5",
    "checkpoint.interval=10",
    "fid.samples=200",
    "fid.kid_subset_size=100",
    "fid.kid_subsets=5",
]


@pytest.mark.parametrize("model", ["dcgan", "wgan_gp", "vae", "autoencoder"])
def test_each_model_trains_and_writes_a_summary(tmp_path, model):
    result = lab(tmp_path, f"model={model}", *TINY)
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
    rows = read_metrics(tmp_path)
    train_rows = [r for r in rows if "perf/images_per_s" in r]
    assert train_rows and all(r["perf/images_per_s"] > 0 for r in train_rows)
    assert all("perf/env_steps_per_s" not in r for r in rows)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def _task(*overrides: str) -> GenTask:
    cfg = compose_config(*overrides)
    torch.manual_seed(cfg.seed)
    return GenTask(cfg, Compute(torch.device("cpu")))


@pytest.mark.slow
def test_dcgan_beats_noise_by_a_wide_margin(tmp_path):
    task = _task("model=dcgan", "model.width=32", "fid.samples=500", "seed=0")
    noise = task.scorer.score(
        lambda i, n: torch.rand(n, *task.shape, generator=torch.Generator().manual_seed(i)) * 2 - 1
    )["eval/fid"]
    untrained = task.evaluate(tmp_path)[0]["eval/fid"]
    task.train_step(800)
    trained = task.evaluate(tmp_path)[0]["eval/fid"]
    assert trained < noise / 5, (trained, noise)
    assert trained < untrained / 3, (trained, untrained)


def test_vae_elbo_improves(tmp_path):
    task = _task("model=vae", "model.width=16", "fid.samples=200", "fid.kid_subset_size=100")
    before = task.evaluate(tmp_path)[0]
    metrics = task.train_step(300)
    after = task.evaluate(tmp_path)[0]
    assert after["eval/elbo"] > before["eval/elbo"] + 20, (before["eval/elbo"], after["eval/elbo"])
    assert after["eval/recon"] < before["eval/recon"]
    assert metrics["train/elbo"] == pytest.approx(-(metrics["train/recon"] + metrics["train/kl"]))


def test_beta_weights_the_kl_term():
    for beta in (1.0, 4.0):
        task = _task(
            "model=vae",
            "model.width=16",
            f"model.beta={beta}",
            "fid.samples=200",
            "fid.kid_subset_size=100",
        )
        with torch.no_grad():
            terms = task.model.terms(task.batches())
        assert float(terms["loss"]) == pytest.approx(
            float(terms["recon"] + beta * terms["kl"]), rel=1e-5
        )


def _eval_rows(run_dir) -> list[dict]:
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
    assert _eval_rows(runs[0]) == _eval_rows(runs[1])
    other = tmp_path / "c"
    assert lab(other, "model=dcgan", *TINY, "seed=4").returncode == 0
    assert _eval_rows(other) != _eval_rows(runs[0])


@pytest.mark.slow
def test_gan_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert lab(straight, "model=dcgan", *TINY, "model.total_steps=40").returncode == 0
    assert lab(resumed, "model=dcgan", *TINY, "model.total_steps=20").returncode == 0
    saved = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)["task"]
    optimizers = saved["model"]["optimizers"]
    assert set(optimizers) == {"generator", "discriminator"}
    assert all(int(o["state"][0]["step"]) == 20 for o in optimizers.values())
    result = lab(resumed, f"resume={resumed}", "model.total_steps=40")
    assert result.returncode == 0, result.stderr
    assert read_summary(resumed)["steps"] == 40
    assert _eval_rows(resumed) == _eval_rows(straight)


@pytest.mark.slow
def test_sample_command_writes_a_grid_and_npz(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    assert lab(tmp_path, "model=dcgan", *TINY).returncode == 0
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "lab.sample", str(tmp_path), "n=10", f"out={out}", "seed=5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    saved = np.load(out / "samples_10_seed5.npz")
    assert saved["images"].shape == (10, 1, 16, 16) and saved["images"].dtype == np.uint8
    assert saved["z"].shape == (10, 64)
    assert saved["images"].std() > 0  # not a blank page
    assert (out / "samples_10_seed5.png").is_file()
    again = subprocess.run(
        [sys.executable, "-m", "lab.sample", str(tmp_path), "n=10", f"out={out}", "seed=5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0
    assert np.array_equal(np.load(out / "samples_10_seed5.npz")["images"], saved["images"])


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
        (["model=dcgan", "agent=dqn"], ["agent", "model"]),
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
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.full((2, 3072), 7, dtype=np.uint8), b"labels": [1, 2]}
        (folder / name).write_bytes(pickle.dumps(batch))
    data = datasets.cifar10(root=str(tmp_path))
    assert data.train.shape == (10, 3, 32, 32) and data.test.shape == (2, 3, 32, 32)
    assert int(data.train.max()) == 7 and data.num_classes == 3


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
