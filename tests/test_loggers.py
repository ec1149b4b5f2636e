"""Curves for every run, TensorBoard, and W&B beside it: read back what was written."""

import pytest

from tests.conftest import TINY_DQN, lab, read_metrics
from tests.test_wandb import history, read_records


def _scalars(event_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_dir))
    events.Reload()
    return {
        tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]
    }, events.Tags()["images"]


def test_tensorboard_holds_what_metrics_jsonl_holds(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=tensorboard")
    assert result.returncode == 0, result.stderr
    scalars, images = _scalars(run / "tensorboard")
    rows = read_metrics(run)
    for key in ("eval/return_mean", "train/loss", "perf/env_steps_per_s"):
        logged = {r["step"]: r[key] for r in rows if key in r}
        assert logged and scalars[key] == pytest.approx(logged), key
    assert "curves" in images  # the end-of-run learning curves, as an image
    assert not (run / "wandb").exists()


def test_wandb_and_tensorboard_in_the_same_run(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=[wandb,tensorboard]", "logger.wandb.mode=offline")
    assert result.returncode == 0, result.stderr
    scalars, _ = _scalars(run / "tensorboard")
    final = read_metrics(run)[-1]["eval/return_mean"]
    assert list(scalars["eval/return_mean"].values())[-1] == pytest.approx(final)
    (wandb_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(read_records(wandb_file))
    assert any("eval/return_mean" in row for row in rows)
    assert any(row.get("curves", {}).get("_type") == "image-file" for row in rows)


def test_every_run_leaves_its_learning_curves(tmp_path):
    run = tmp_path / "run"
    result = lab(run, *TINY_DQN, "logger=none")
    assert result.returncode == 0, result.stderr
    curves = run / "media" / "curves.png"
    assert curves.is_file() and f"curves: {curves}" in result.stdout

    from PIL import Image

    width, height = Image.open(curves).size
    assert width > 2.5 * height  # three panels: eval return, episode return, train/loss


def test_curves_draw_the_threshold_and_every_loss(tmp_path):
    from lab.curves import plot_curves

    rows = [
        {"step": 10, "train/d_loss": 1.0, "train/g_loss": 2.0},
        {"step": 20, "eval/fid": 9.0, "train/d_loss": 0.5},
    ]
    path = plot_curves(rows, tmp_path / "c.png", "eval/fid", 3.0, "train/d_loss", "t")
    assert path is not None and path.is_file()
    assert plot_curves([], tmp_path / "none.png", "eval/fid", None, "x", "t") is None
