"""``python -m lab.eval``: a trained run's checkpoint evaluated again, without training."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from lab import eval as lab_eval
from tests.conftest import (
    ROOT,
    TINY_DQN,
    assert_one_line_error,
    lab,
    read_metrics,
    read_summary,
)
from tests.test_gen import TINY


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory) -> Path:
    """Seed 1 evaluated every 500 steps: best.pt and last.pt hold different weights (measured:
    a return of 263 at step 1502, 221 at 2001)."""
    run = tmp_path_factory.mktemp("dqn") / "run"
    result = lab(run, *TINY_DQN, "logger=none", "seed=1", "eval.interval=500")
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["best"] != summary["metrics"], "best.pt = last.pt: no test of checkpoint="
    return run


def _eval(capsys, *argv: str | Path) -> subprocess.CompletedProcess:
    """``lab.eval.main`` in this process (seconds faster than a new one), as a finished command."""
    argv = [str(a) for a in argv]
    code = 0
    try:
        lab_eval.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["lab.eval", *argv], code, out, err)


def _rows(run: Path) -> list[dict]:
    path = run / "evals.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _evaluated(capsys, run: Path, *options: str) -> dict:
    """The evals.jsonl row that one successful evaluation appended."""
    before = len(_rows(run))
    result = _eval(capsys, run, *options)
    assert result.returncode == 0, result.stderr
    rows = _rows(run)
    assert len(rows) == before + 1
    return rows[-1]


def _eval_metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith("eval/")}


def _best_step(run: Path) -> int:
    """The step of the first evaluation with the highest return: the one best.pt holds."""
    evals = [r for r in read_metrics(run) if "eval/return_mean" in r]
    return max(evals, key=lambda r: r["eval/return_mean"])["step"]


def _fingerprint(run: Path) -> dict[str, str]:
    """Every file of the run and a hash of its contents."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def test_the_command_prints_the_metrics_and_appends_a_row(dqn_run):
    before = _fingerprint(dqn_run)
    result = subprocess.run(
        [sys.executable, "-m", "lab.eval", str(dqn_run), "episodes=3"],
        cwd=ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"dqn on CartPole-v1: best.pt at step {_best_step(dqn_run)}, seed 1"
    for key in ("eval/return_mean", "eval/return_std", "eval/length_mean"):
        assert any(line.split() and line.split()[0] == key for line in lines), result.stdout
    row = _rows(dqn_run)[-1]
    mean, std = row["metrics"]["eval/return_mean"], row["metrics"]["eval/return_std"]
    assert [line.split() for line in lines if "±" in line] == [
        ["eval/return", f"{mean:.6g}", "±", f"{std:.6g}"]
    ]
    assert (row["checkpoint"], row["step"]) == ("best", _best_step(dqn_run))
    assert row["options"] == {
        "seed": 1,
        "device": "cpu",
        "precision": "fp32",
        "episodes": 3,
        "video": False,
    }
    assert datetime.fromisoformat(row["time"]).tzinfo is not None and row["media"] == {}
    # Only evals.jsonl is new: metrics, summary and checkpoints are as training left them.
    after = _fingerprint(dqn_run)
    assert after.pop("evals.jsonl") and after == before


def test_best_and_last_evaluate_the_weights_of_their_checkpoint(dqn_run, capsys):
    """The same evaluation seeds as training: the numbers of the run's own evaluations."""
    summary = read_summary(dqn_run)
    last_eval = [r for r in read_metrics(dqn_run) if "eval/return_mean" in r][-1]
    best = _evaluated(capsys, dqn_run, "checkpoint=best")
    last = _evaluated(capsys, dqn_run, "checkpoint=last")
    default = _evaluated(capsys, dqn_run)
    assert best["metrics"] == summary["best"] and best["step"] == _best_step(dqn_run)
    assert last["metrics"] == _eval_metrics(last_eval) and last["step"] == last_eval["step"]
    assert (default["checkpoint"], default["metrics"]) == ("best", best["metrics"])


def test_seed_evaluates_on_the_episodes_of_that_seed(dqn_run, capsys):
    own = _evaluated(capsys, dqn_run, "checkpoint=last", "seed=1")  # the run's seed
    other = _evaluated(capsys, dqn_run, "checkpoint=last", "seed=7")
    assert own["metrics"] == _eval_metrics(read_summary(dqn_run)["metrics"])
    assert other["metrics"] != own["metrics"]
    assert other["options"]["seed"] == 7


def test_video_true_writes_an_episode_into_media(dqn_run, capsys):
    row = _evaluated(capsys, dqn_run, "video=true", "episodes=1")
    video = dqn_run / row["media"]["eval/video"]
    assert video.parent == dqn_run / "media" / "eval_seed1"
    assert video.name.startswith(f"episode_{_best_step(dqn_run):09d}") and video.suffix in (
        ".mp4",
        ".gif",
    )
    assert video.stat().st_size > 1000


def test_a_generative_run_recomputes_fid_as_training_did(tmp_path, capsys):
    run = tmp_path / "run"
    result = lab(run, "model=dcgan", *TINY, "model.total_steps=10", "threads=1", "logger=none")
    assert result.returncode == 0, result.stderr
    trained = read_summary(run)["metrics"]
    same = _evaluated(capsys, run, "checkpoint=last", "fid.samples=200")
    assert same["metrics"]["eval/fid"] == pytest.approx(trained["eval/fid"], rel=1e-5)
    assert same["metrics"]["eval/kid_mean"] == pytest.approx(trained["eval/kid_mean"], rel=1e-5)
    more = _evaluated(capsys, run, "checkpoint=last", "fid.samples=300")
    assert more["metrics"]["eval/fid_samples"] == 300
    assert more["metrics"]["eval/fid"] != same["metrics"]["eval/fid"]
    assert more["options"]["fid.samples"] == 300 and (run / more["media"]["eval/samples"]).is_file()
    error = assert_one_line_error(_eval(capsys, run, "episodes=3"), "episodes= is for rl runs")
    assert "fid.samples=" in error


def _copy_of_run(run: Path, where: Path, last_pt: bytes | None = None) -> Path:
    """The run's config, with ``last_pt`` (if any) as its last checkpoint and no best.pt."""
    shutil.copytree(run / ".hydra", where / ".hydra")
    if last_pt is not None:
        (where / "checkpoints").mkdir()
        (where / "checkpoints" / "last.pt").write_bytes(last_pt)
    return where


# case: (the command line, given the trained run and an empty folder; what the error says)
BAD = {
    "not a run directory": (
        lambda run, tmp: [tmp],
        ["not a run directory (no .hydra/config.yaml)"],
    ),
    "no checkpoint": (
        lambda run, tmp: [_copy_of_run(run, tmp / "copy")],
        ["no checkpoint at", "last.pt"],
    ),
    "a corrupt checkpoint": (
        lambda run, tmp: [_copy_of_run(run, tmp / "copy", b"not a checkpoint")],
        ["is corrupt or unreadable"],
    ),
    "no run directory": (lambda run, tmp: ["episodes=3"], ["usage: python -m lab.eval <run dir>"]),
    "a count of zero": (lambda run, tmp: [run, "episodes=0"], ["episodes=0: must be a positive"]),
    "a checkpoint name": (
        lambda run, tmp: [run, "checkpoint=final"],
        ["checkpoint=final: use best or last"],
    ),
    "a switch": (lambda run, tmp: [run, "video=yes"], ["video=yes: expected true or false"]),
    "a device": (lambda run, tmp: [run, "device=tpu"], ["device=tpu"]),
    "another key": (lambda run, tmp: [run, "agent.lr=1"], ["agent.lr=1: unknown option", "seed="]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(case, dqn_run, tmp_path, capsys):
    command, needles = BAD[case]
    argv = command(dqn_run, tmp_path)
    before = _fingerprint(dqn_run), _fingerprint(tmp_path)
    result = _eval(capsys, *argv)
    assert result.returncode == 2
    assert_one_line_error(result, *needles)
    assert result.stdout == ""
    assert (_fingerprint(dqn_run), _fingerprint(tmp_path)) == before
