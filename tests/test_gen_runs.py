"""The runner's promises, kept for generative runs: exact resume, best.pt, SIGTERM, samples from
the named checkpoint, W&B media and the report (lower FID is better)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lab import runner, sample
from lab.compute import Compute
from lab.gen.data import to_uint8
from lab.gen.task import GenTask, build_model
from lab.report import group_runs, load_runs, report
from tests.conftest import (
    compose_config,
    lab,
    lab_background,
    lab_sweep,
    read_metrics,
    read_summary,
    stop_with_sigterm,
    wait_for_rows,
)
from tests.test_gen import TINY, logged_rows
from tests.test_wandb import history, read_records

CPU = Compute(torch.device("cpu"))


def _checkpoint(run_dir: Path, name: str = "last.pt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)


def _assert_same(a, b, where: str = "") -> None:
    """Nested checkpoint contents equal, tensors to the bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture
def one_thread():
    """In-process runs on one thread (two threads of small convolutions on two busy cores are
    several times slower), and the test process's own thread count back afterwards."""
    threads = torch.get_num_threads()
    yield "threads=1"
    torch.set_num_threads(threads)


def _run_in_process(run_dir: Path, *overrides: str):
    run_dir.mkdir(exist_ok=True)  # as Hydra makes it
    return runner.run(compose_config(*overrides, "logger=none"), run_dir)


@pytest.mark.parametrize("model", ["dcgan", "vae"])
def test_resume_restores_weights_optimizer_and_rng(tmp_path, model, one_thread):
    """A run stopped at step 20 and resumed ends where an uninterrupted run ends: the same nets,
    optimizer moments, batch order and RNG (the GAN's latents, the VAE's reparameterisation)."""
    overrides = [f"model={model}", *TINY, one_thread]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run_in_process(straight, *overrides, "model.total_steps=40")
    _run_in_process(resumed, *overrides, "model.total_steps=20")
    halfway = _checkpoint(resumed)["task"]["model"]["optimizers"]
    assert all(int(o["state"][0]["step"]) == 20 for o in halfway.values())
    _run_in_process(resumed, *overrides, "model.total_steps=40", f"resume={resumed}")

    a, b = _checkpoint(straight), _checkpoint(resumed)
    _assert_same(a["task"], b["task"], "task")  # nets, optimizers, batches, counters
    # Python's own RNG is left out: the first `import sklearn.datasets` in a process draws from
    # it, and only the first of these in-process runs imports it.
    _assert_same(a["rng"]["torch"], b["rng"]["torch"], "rng/torch")
    _assert_same(a["rng"]["numpy"], b["rng"]["numpy"], "rng/numpy")
    assert logged_rows(resumed) == logged_rows(straight)


def assert_resumes_exactly(tmp_path: Path, *overrides: str) -> dict:
    """A run stopped at step 20 and resumed to 40 ends as a straight 40-step run does (the
    task's whole state, the logged rows); the straight run's last checkpoint, for more checks."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run_in_process(straight, *overrides, "model.total_steps=40")
    _run_in_process(resumed, *overrides, "model.total_steps=20")
    _run_in_process(resumed, *overrides, "model.total_steps=40", f"resume={resumed}")
    a, b = _checkpoint(straight), _checkpoint(resumed)
    _assert_same(a["task"], b["task"], "task")
    assert logged_rows(resumed) == logged_rows(straight)
    return a


# lr 5e-3 with a batch-norm discriminator makes FID fall then rise within 40 steps (127 at
# step 30, 137 at step 40 on one thread), so best.pt and last.pt hold different weights.
# (Spectral normalisation, dcgan's default, steadies it: FID falls all the way.)
UNEVEN = [*TINY, "model.total_steps=40", "model.lr=5e-3", "model.d_norm=batch", "threads=1"]


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("dcgan") / "run"
    result = lab(run, "model=dcgan", *UNEVEN)
    assert result.returncode == 0, result.stderr
    return run


def _fid_of(run: Path, checkpoint: str) -> float:
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    task = GenTask(cfg, CPU)
    task.load_state_dict(_checkpoint(run, checkpoint)["task"])
    return task.evaluate(run / "rescored")[0]["eval/fid"]


def test_best_pt_holds_the_weights_that_scored_the_lowest_fid(dcgan_run):
    fids = {r["step"]: r["eval/fid"] for r in read_metrics(dcgan_run) if "eval/fid" in r}
    best_step = min(fids, key=fids.get)
    assert best_step != max(fids), f"FID fell all the way {fids}: best.pt = last.pt, no test"
    summary = read_summary(dcgan_run)
    assert summary["best"]["eval/fid"] == fids[best_step]
    assert _checkpoint(dcgan_run, "best.pt")["task"]["step"] == best_step
    # Scored again, best.pt's weights give the best FID, and last.pt's the last one.
    assert _fid_of(dcgan_run, "best.pt") == pytest.approx(fids[best_step], rel=1e-3)
    assert _fid_of(dcgan_run, "last.pt") == pytest.approx(fids[max(fids)], rel=1e-3)


def _sample(run: Path, out: Path, *options: str) -> dict[str, np.ndarray]:
    sample.main([str(run), "n=10", "seed=5", f"out={out}", *options])
    return dict(np.load(out / "samples_10_seed5.npz"))


def test_sample_command_uses_the_named_checkpoint(dcgan_run, tmp_path):
    best = _sample(dcgan_run, tmp_path / "best", "checkpoint=best")
    last = _sample(dcgan_run, tmp_path / "last", "checkpoint=last")
    default = _sample(dcgan_run, tmp_path / "default")
    assert best["images"].shape == (10, 1, 16, 16) and best["images"].dtype == np.uint8
    assert best["z"].shape == (10, 64) and np.array_equal(best["z"], last["z"])  # seed=5 both
    assert (tmp_path / "best" / "samples_10_seed5.png").is_file()
    assert np.array_equal(default["images"], best["images"])  # best is the default
    assert not np.array_equal(best["images"], last["images"])
    cfg = OmegaConf.load(dcgan_run / ".hydra" / "config.yaml")
    for name, drawn in (("best.pt", best), ("last.pt", last)):
        model = build_model(cfg.model, (1, 16, 16), CPU)
        model.load_state_dict(_checkpoint(dcgan_run, name)["task"]["model"])
        model.train(False)
        with torch.inference_mode():
            images = to_uint8(model.generate(torch.from_numpy(drawn["z"])))
        assert np.array_equal(images.numpy(), drawn["images"]), name


def test_sigterm_ends_a_generative_run_interrupted_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, "model=dcgan", *TINY, "model.total_steps=100000", "threads=1")
    wait_for_rows(run, 2, proc)
    summary = stop_with_sigterm(proc, run)
    stopped = summary["steps"]
    saved = _checkpoint(run)["task"]
    assert saved["step"] == stopped > 0
    assert int(saved["model"]["optimizers"]["generator"]["state"][0]["step"]) == stopped
    # resume= alone brings back the run's own overrides (model=dcgan, its TINY budget).
    result = lab(run, f"resume={run}", f"model.total_steps={stopped + 10}")
    assert result.returncode == 0, result.stderr
    assert (read_summary(run)["status"], read_summary(run)["steps"]) == ("completed", stopped + 10)
    resumed = _checkpoint(run)["task"]["model"]["optimizers"]["generator"]["state"][0]["step"]
    assert int(resumed) == stopped + 10


def test_wandb_holds_the_sample_grids_of_each_evaluation(tmp_path):
    run = tmp_path / "run"
    result = lab(run, "model=vae", *TINY, "logger=wandb", "logger.wandb.mode=offline")
    assert result.returncode == 0, result.stderr
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(run.rglob("*"))
    rows = history(read_records(files[0]))
    logged = {key for row in rows for key, value in row.items() if isinstance(value, dict)}
    grids = {"eval/samples", "eval/reconstructions", "eval/interpolations"}
    assert logged == {*grids, "curves"}  # and the learning curves, at the end
    for key in grids:
        grids = [(row["_step"], row[key]) for row in rows if key in row]
        assert [step for step, _ in grids] == [10, 20], key
        for _, grid in grids:
            assert grid["_type"] == "image-file", grid
            assert (files[0].parent / "files" / grid["path"]).is_file(), grid


def test_report_counts_a_generative_run_solved_when_fid_falls_below_the_threshold(tmp_path):
    # A first FID of a few hundred is below 10,000 (solved) and above 0.001 (not solved);
    # a higher-is-better reading would say the opposite of both.
    result = lab_sweep(
        tmp_path, "model=dcgan", *TINY, "fid.threshold=10000,0.001", "stop_on_threshold=true"
    )
    assert result.returncode == 0, result.stderr
    groups = {g.label: g.stats() for g in group_runs(load_runs(tmp_path))}
    assert set(groups) == {"fid.threshold=10000", "fid.threshold=0.001"}
    easy, hard = groups["fid.threshold=10000"], groups["fid.threshold=0.001"]
    assert (easy["metric"], easy["solved"], easy["steps_to_threshold_median"]) == (
        "eval/fid",
        1,
        10,
    )
    assert (hard["metric"], hard["solved"], hard["steps_to_threshold_median"]) == (
        "eval/fid",
        0,
        None,
    )
    table = report(tmp_path)
    assert "| fid.threshold=10000 | eval/fid | 1 | 1/1 | 0 |" in table
    assert "| fid.threshold=0.001 | eval/fid | 1 | 0/1 | 0 |" in table
