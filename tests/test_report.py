"""lab.report on fabricated folders of runs: summaries, metrics and overrides, no training."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.report import group_runs, load_runs, report
from tests.conftest import ROOT


def _run(
    root: Path,
    name: str,
    overrides: list[str],
    status: str,
    final: float | None,
    reached: tuple[float, int] | None,
    wall: float = 10.0,
    curve=(),
) -> None:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = [{"step": s, "time": s / 100, "eval/return_mean": v} for s, v in curve]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status == "running":
        return
    summary = {
        "status": status,
        "family": "rl",
        "algo": "dqn",
        "task": "CartPole-v1",
        "seed": 0,
        "device": "cpu",
        "steps": 1000,
        "wall_seconds": wall,
        "metrics": {} if final is None else {"eval/return_mean": final},
        "best": {},
        "threshold": {
            "metric": "eval/return_mean",
            "value": 475.0,
            "reached_seconds": reached[0] if reached else None,
            "reached_step": reached[1] if reached else None,
        },
    }
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    (run / "summary.json").write_text(json.dumps(summary))


def test_report_on_a_fabricated_sweep(tmp_path):
    curve = [(0, 10.0), (500, 200.0), (1000, 500.0)]
    # group A: agent=dqn, three seeds solved at 4, 8 and 30 s; finals 500, 480, 490
    _run(
        tmp_path,
        "0",
        ["agent=dqn", "seed=0", "stop_on_threshold=true"],
        "solved",
        500.0,
        (4.0, 400),
        5.0,
        curve,
    )
    _run(
        tmp_path,
        "1",
        ["agent=dqn", "seed=1", "stop_on_threshold=true"],
        "solved",
        480.0,
        (8.0, 800),
        9.0,
        curve,
    )
    _run(
        tmp_path,
        "2",
        ["agent=dqn", "seed=2", "stop_on_threshold=true"],
        "solved",
        490.0,
        (30.0, 3000),
        31.0,
        curve,
    )
    # group B: agent=sb3_dqn, one solved, one not, one failed, one still running
    _run(
        tmp_path,
        "3",
        ["agent=sb3_dqn", "seed=0", "stop_on_threshold=true"],
        "solved",
        476.0,
        (20.0, 2000),
        21.0,
        curve,
    )
    _run(
        tmp_path,
        "4",
        ["agent=sb3_dqn", "seed=1", "stop_on_threshold=true"],
        "completed",
        100.0,
        None,
        60.0,
        curve,
    )
    _run(tmp_path, "5", ["agent=sb3_dqn", "seed=2", "stop_on_threshold=true"], "failed", None, None)
    _run(
        tmp_path,
        "10",
        ["agent=sb3_dqn", "seed=3", "stop_on_threshold=true"],
        "running",
        None,
        None,
        curve=curve[:2],
    )

    groups = {g.label: g.stats() for g in group_runs(load_runs(tmp_path))}
    assert set(groups) == {"agent=dqn", "agent=sb3_dqn"}  # shared overrides drop out of labels
    a, b = groups["agent=dqn"], groups["agent=sb3_dqn"]
    assert (a["runs"], a["solved"], a["failed"], a["running"]) == (3, 3, 0, 0)
    assert a["time_to_threshold_median"] == 8.0 and a["steps_to_threshold_median"] == 800
    assert a["final_median"] == 490.0 and a["final_mean"] == pytest.approx(490.0)
    assert a["final_std"] == pytest.approx(10.0)  # sample std of 500, 480, 490
    assert a["wall_median"] == 9.0
    assert (b["runs"], b["solved"], b["failed"], b["running"]) == (4, 1, 1, 1)
    assert b["time_to_threshold_median"] == 20.0
    assert b["final_median"] == pytest.approx(288.0)  # median of 476 and 100
    assert b["wall_median"] == pytest.approx(40.5)

    table = report(tmp_path)
    assert "| agent=dqn | eval/return_mean | 3 | 3/3 | 0 | 490 | 490 ± 10 | 8 | 800 | 9 |" in table
    assert "| agent=sb3_dqn | eval/return_mean | 4 | 1/2 | 1 |" in table
    assert "Failed runs (1):" in table and "RuntimeError: boom" in table
    assert "Runs without a summary yet (running or killed): 1" in table
    with (tmp_path / "report.csv").open() as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    assert float(rows["agent=dqn"]["time_to_threshold_median"]) == 8.0
    assert (tmp_path / "report.md").read_text().endswith(table)
    for png in ("learning_curves.png", "bars.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_report_command_prints_the_table_and_rejects_a_missing_dir(tmp_path):
    _run(tmp_path, "0", ["seed=0"], "completed", 9.0, None)
    out = subprocess.run(
        [sys.executable, "-m", "lab.report", str(tmp_path), "--out", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "| dqn CartPole-v1 |" in out.stdout and (tmp_path / "r" / "report.md").is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "lab.report", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
