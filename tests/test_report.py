"""lab.report on fabricated folders of runs: summaries, metrics and overrides, no training."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import lab.report
from lab.published import PUBLISHED_FILE, published_for
from lab.report import (
    GAP_HEADING,
    NOTHING_REACHED,
    Column,
    bootstrap_ci,
    gap_line,
    group_runs,
    load_runs,
    report,
)
from lab.report_plots import bars, group_curves, learning_curves
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
    metric: str = "eval/return_mean",
    best: float | None = None,
    algo: str = "dqn",
    task: str = "CartPole-v1",
) -> None:
    """A fabricated run; its best evaluation is its final one unless ``best`` says otherwise."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    rows = [{"step": s, "time": s / 100, metric: v} for s, v in curve]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status == "running":
        return
    summary = {
        "status": status,
        "family": "generative" if metric == "eval/fid" else "rl",
        "algo": algo,
        "task": task,
        "seed": 0,
        "device": "cpu",
        "steps": curve[-1][0] if curve else 1000,
        "wall_seconds": wall,
        "metrics": {} if final is None else {metric: final},
        "best": {} if final is None else {metric: final if best is None else best},
        "threshold": {
            "metric": metric,
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
    assert a["env_steps_per_s_median"] == pytest.approx(1000 / 9)  # 1000 steps in 5, 9, 30 s
    assert a["params"] is None  # these summaries predate the field: a dash, not a 0

    table = report(tmp_path)
    assert (
        "| agent=dqn | eval/return_mean | 3 | 3/3 | 0 | 0 | 490 | 490 ± 10 | 490 [480, 500] | 490 "
        "| 8 | 800 | 9 | 111 | — | 500 ± 0 @50k (rl-zoo3 DQN); 488.7 ± 16.11 @500k (CleanRL DQN) |"
        in table
    )
    assert "| agent=sb3_dqn | eval/return_mean | 4 | 1/2 | 1 | 0 |" in table
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


def _groups(root: Path) -> dict:
    return {g.label: g for g in group_runs(load_runs(root))}


@pytest.mark.parametrize(
    "metric, a, b",
    [
        ("eval/return_mean", (0.0, 100.0), (200.0, 300.0)),
        ("eval/fid", (300.0, 200.0), (100.0, 0.0)),  # lower is better: plotted the same way
    ],
)
def test_seeds_evaluated_at_offset_steps_give_a_mean_without_a_jump(tmp_path, metric, a, b):
    # Seed 0 evaluates at 2,500 and 5,000, seed 1 at 2,600 and 5,100: each changes by 100 per
    # 2,500 steps, so a mean that moves faster has switched seeds where one starts or stops.
    evaluated = {"0": ([2500, 5000], a), "1": ([2600, 5100], b)}
    for seed, (steps, values) in evaluated.items():
        curve = list(zip(steps, values, strict=True))
        _run(
            tmp_path,
            seed,
            [f"seed={seed}"],
            "completed",
            values[1],
            None,
            curve=curve,
            metric=metric,
        )
    (group,) = _groups(tmp_path).values()
    curves = group_curves(group, metric)
    grid, mean = curves.mean.steps, curves.mean.mean
    assert curves.mean.n == 2 and not curves.apart
    slope = np.abs(np.diff(mean) / np.diff(grid))
    assert slope.max() == pytest.approx(100 / 2500)
    assert grid.tolist() == [2600, 5000]  # where both seeds have evaluated
    seeds = [np.interp(grid, steps, values) for steps, values in evaluated.values()]
    np.testing.assert_allclose(mean, np.mean(seeds, axis=0))


def test_a_solved_seed_stays_at_its_last_value_in_the_mean(tmp_path):
    _run(
        tmp_path, "0", ["seed=0"], "solved", 500.0, (1.0, 1000), curve=[(500, 300.0), (1000, 500.0)]
    )
    _run(
        tmp_path,
        "1",
        ["seed=1"],
        "completed",
        400.0,
        None,
        curve=[(500, 100.0), (1000, 200.0), (2000, 400.0)],
    )
    (group,) = _groups(tmp_path).values()
    mean = group_curves(group, "eval/return_mean").mean
    assert mean.steps.tolist() == [500, 1000, 2000]
    assert mean.mean.tolist() == [200.0, 350.0, 450.0]


def test_no_time_to_threshold_panel_when_no_run_reached_it(tmp_path):
    _run(tmp_path, "0", ["seed=0"], "completed", 100.0, None, curve=[(500, 100.0)])
    table = report(tmp_path)
    assert NOTHING_REACHED in table and NOTHING_REACHED in (tmp_path / "report.md").read_text()
    (panel,) = bars(list(_groups(tmp_path).values())).axes
    assert "time-to-threshold" not in panel.get_title()

    _run(tmp_path, "1", ["seed=1"], "solved", 500.0, (2.0, 200), curve=[(500, 500.0)])
    assert NOTHING_REACHED not in report(tmp_path)
    left, _ = bars(list(_groups(tmp_path).values())).axes
    assert left.get_title() == "median time-to-threshold"


def test_a_single_evaluation_is_drawn_as_a_point(tmp_path):
    _run(tmp_path, "0", ["agent=dqn", "seed=0"], "completed", 42.0, None, curve=[(1000, 42.0)])
    _run(tmp_path, "1", ["agent=a2c", "seed=0"], "running", None, None, curve=[(1000, 7.0)])
    lines = learning_curves(list(_groups(tmp_path).values())).axes[0].lines
    assert sorted(line.get_ydata()[0] for line in lines) == [7.0, 42.0]
    for line in lines:
        assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "")


def test_interrupted_runs_are_marked_like_failed_ones(tmp_path):
    curve = [(500, 100.0), (1000, 200.0), (1500, 300.0)]
    _run(tmp_path, "0", ["seed=0"], "completed", 300.0, None, curve=curve)
    _run(tmp_path, "1", ["seed=1"], "completed", 300.0, None, curve=curve)
    _run(tmp_path, "2", ["seed=2"], "interrupted", 50.0, None, curve=[(500, 50.0)])
    _run(tmp_path, "3", ["seed=3"], "failed", None, None, curve=[(500, 60.0), (1000, 70.0)])
    (group,) = _groups(tmp_path).values()
    row = group.stats()
    assert (row["runs"], row["failed"], row["interrupted"]) == (4, 1, 1)
    assert row["final_median"] == 300.0 and row["final_std"] == 0.0  # neither cut run counts
    table = report(tmp_path)
    assert "| 4 | 0/2 | 1 | 1 | 300 |" in table
    assert "Interrupted runs (1):" in table and f"`{tmp_path / '2'}`: at step 500" in table
    assert "Failed runs (1):" in table

    curves = group_curves(group, "eval/return_mean")
    assert curves.mean.n == 2 and curves.mean.mean.tolist() == [100.0, 200.0, 300.0]
    assert sorted(c.run.status for c in curves.apart) == ["failed", "interrupted"]
    lines = learning_curves([group]).axes[0].lines
    crossed = [line for line in lines if line.get_marker() == "x"]
    assert sorted(line.get_ydata()[-1] for line in crossed) == [50.0, 70.0]
    assert "1 failed, 1 interrupted" in lines[0].get_label()


def test_the_column_list_drives_the_markdown_and_the_csv(tmp_path, monkeypatch):
    _run(tmp_path, "0", ["seed=0"], "completed", 9.0, None, curve=[(500, 3.0), (900, 9.0)])
    last_step = Column(
        "last_step_max", "last step", lambda g: max(r.rows[-1]["step"] for r in g.runs)
    )
    monkeypatch.setattr(lab.report, "COLUMNS", [*lab.report.COLUMNS, last_step])
    header, _, row = report(tmp_path).splitlines()[:3]
    titles = [c.title for c in lab.report.COLUMNS if c.title]
    assert header == "| " + " | ".join(titles) + " |" and row.endswith("| 900 |")
    with (tmp_path / "report.csv").open() as f:
        reader = csv.DictReader(f)
        (csv_row,) = reader
    assert reader.fieldnames == [c.key for c in lab.report.COLUMNS]
    assert csv_row["last_step_max"] == "900" and csv_row["final_median"] == "9.0"


def test_the_bootstrap_interval_matches_a_hand_computed_case():
    # Seeds' finals 0, 0, 0, 40: a resample's mean is 10·k, k ~ Binomial(4, 1/4) the 40s drawn.
    # P(k=0) = 0.316 > 2.5%, so the interval starts at 0; P(k ≤ 2) = 0.949 < 97.5% ≤ P(k ≤ 3)
    # = 0.996, so it ends at 30, not at 40 (the plain min and max would say [0, 40]).
    assert bootstrap_ci([0.0, 0.0, 0.0, 40.0]) == (0.0, 30.0)
    assert bootstrap_ci([5.0]) is None and bootstrap_ci([]) is None  # no interval from one seed
    assert bootstrap_ci([3.0, 9.0, 4.0]) == bootstrap_ci([3.0, 9.0, 4.0])  # a reproducible table


def test_the_interval_holds_the_mean_and_narrows_with_more_seeds(tmp_path):
    finals = [430.0, 470.0, 480.0, 490.0, 500.0]
    for i, final in enumerate(finals * 4):  # the same spread of finals over 5, then 20 seeds
        group = "few" if i < len(finals) else "many"
        _run(tmp_path, str(i), [f"group={group}", f"seed={i}"], "completed", final, None)
    groups = {g.label: g.stats() for g in group_runs(load_runs(tmp_path))}
    few, many = groups["group=few"], groups["group=many"]
    assert few["final_mean"] == pytest.approx(many["final_mean"]) == pytest.approx(474.0)
    for row in (few, many):
        assert row["final_ci_low"] < row["final_mean"] < row["final_ci_high"]
    assert many["final_ci_high"] - many["final_ci_low"] < few["final_ci_high"] - few["final_ci_low"]
    table = report(tmp_path)
    low, high = few["final_ci_low"], few["final_ci_high"]
    assert f"| 474 [{low:.4g}, {high:.4g}] |" in table
    with (tmp_path / "report.csv").open() as f:
        csv_row = next(r for r in csv.DictReader(f) if r["group"] == "group=few")
    assert float(csv_row["final_ci_low"]) == low and float(csv_row["final_ci_high"]) == high


def test_the_best_column_is_the_mean_of_each_seeds_best(tmp_path):
    # Finals fell back from the best evaluation (the collapse the best column shows up).
    _run(tmp_path, "0", ["seed=0"], "completed", 300.0, None, best=500.0)
    _run(tmp_path, "1", ["seed=1"], "completed", 200.0, None, best=450.0)
    _run(tmp_path, "2", ["seed=2"], "failed", None, None)  # no final, no best: not averaged
    (group,) = _groups(tmp_path).values()
    assert group.stats()["best_mean"] == pytest.approx(475.0)
    assert "| 250 [200, 300] | 475 |" in report(tmp_path)


def test_the_published_figure_and_the_gap_to_it(tmp_path):
    for seed, final in enumerate([500.0, 480.0, 490.0]):
        _run(tmp_path, str(seed), ["agent=dqn", f"seed={seed}"], "completed", final, None)
    for seed, final in enumerate([-100.0, -110.0]):
        _run(
            tmp_path,
            f"a{seed}",
            ["agent=a3c", f"seed={seed}"],
            "completed",
            final,
            None,
            algo="a3c",
            task="Acrobot-v1",
        )
    groups = _groups(tmp_path)
    assert groups["agent=dqn"].stats()["published"] == (
        "500 ± 0 @50k (rl-zoo3 DQN); 488.7 ± 16.11 @500k (CleanRL DQN)"
    )
    assert groups["agent=a3c"].stats()["published"] == "-83.35 ± 17.21 @500k (rl-zoo3 A2C)"
    # 490 [480, 500] holds both DQN figures; -105 [-110, -100] is 21.65 below A2C's -83.35.
    assert gap_line(groups["agent=dqn"]) == (
        "- agent=dqn (lab: 490 [480, 500], 3 seeds at 1k): -10 against rl-zoo3 DQN's 500 @50k, "
        "inside lab's CI; +1.31 against CleanRL DQN's 488.7 @500k, inside lab's CI"
    )
    assert gap_line(groups["agent=a3c"]) == (
        "- agent=a3c (lab: -105 [-110, -100], 2 seeds at 1k): "
        "-21.65 against rl-zoo3 A2C's -83.35 @500k, outside lab's CI"
    )
    table = report(tmp_path)
    assert f"\n{GAP_HEADING}\n\n{gap_line(groups['agent=dqn'])}\n" in table


def test_nothing_published_is_a_dash_and_no_gap_line(tmp_path):
    _run(tmp_path, "0", ["env=catch", "seed=0"], "completed", 1.0, None, task="lab/Catch-v0")
    _run(tmp_path, "1", ["env=catch", "seed=1"], "completed", 0.8, None, task="lab/Catch-v0")
    (group,) = _groups(tmp_path).values()
    assert group.published() == [] and gap_line(group) is None
    table = report(tmp_path)
    assert table.splitlines()[2].endswith("| — |") and GAP_HEADING not in table
    assert published_for("dcgan", "digits") == [] and published_for("dqn", "Pong") == []


def test_a_sweep_over_agents_and_envs_gives_a_row_per_pair_with_its_figure(tmp_path):
    # python -m lab -m agent=dqn,a2c env=cartpole,acrobot seed=0,1,2
    envs = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1"}
    job = 0
    for agent in ("dqn", "a2c"):
        for env, env_id in envs.items():
            for seed in range(3):
                overrides = [f"agent={agent}", f"env={env}", f"seed={seed}"]
                _run(tmp_path, str(job), overrides, "completed", 1.0, None, algo=agent, task=env_id)
                job += 1
    groups = _groups(tmp_path)
    assert sorted(groups) == [
        "agent=a2c env=acrobot",
        "agent=a2c env=cartpole",
        "agent=dqn env=acrobot",
        "agent=dqn env=cartpole",
    ]
    assert all(len(g.runs) == 3 for g in groups.values())
    assert groups["agent=a2c env=acrobot"].stats()["published"].endswith("(rl-zoo3 A2C)")
    assert "CleanRL DQN" in groups["agent=dqn env=acrobot"].stats()["published"]


def test_every_published_figure_names_its_source_budget_and_a_known_env():
    data = yaml.safe_load(PUBLISHED_FILE.read_text())
    for source in data["sources"].values():
        assert source["url"].startswith("https://github.com/") and source["how"]
    envs = {yaml.safe_load(f.read_text())["id"] for f in (ROOT / "conf" / "env").glob("*.yaml")}
    for r in data["results"]:
        assert r["source"] in data["sources"] and r["algo"] in set(data["agents"].values())
        assert r["env"] in envs and r["steps"] >= 10_000 and isinstance(r["mean"], float)


def _generative_run(root, name, model, seed, fid, floor, images_per_s, params=None) -> None:
    """A fabricated finished run of ``model``: FID, its floor, KID, throughput rows, params."""
    _run(
        root,
        name,
        [f"model={model}", f"seed={seed}"],
        "completed",
        fid,
        None,
        metric="eval/fid",
        algo=model,
        task="digits",
        wall=60.0 + seed,
    )
    summary_file = root / name / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["metrics"] |= {"eval/fid_floor": floor, "eval/kid_mean": fid / 10}
    summary["metrics"]["eval/confident"] = 1 / fid  # recognised less as FID grows, here
    if params is not None:
        summary["params"] = params
    summary_file.write_text(json.dumps(summary))
    rows = [{"step": 100 * i, "perf/images_per_s": v} for i, v in enumerate(images_per_s)]
    (root / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_generative_sweep_shows_fid_beside_its_floor_and_the_cost(tmp_path):
    # dcgan: FIDs 6, 4, 5 over floors 2, 1, 2.5: medians 5 and 2, but the median of the
    # per-seed ratios (3, 4, 2) is 3, not 5 / 2. Throughput: each run's median, then theirs.
    for seed, (fid, floor, ips) in enumerate([(6, 2, [90, 100]), (4, 1, [300]), (5, 2.5, [200])]):
        _generative_run(tmp_path, str(seed), "dcgan", seed, fid, floor, ips, params=1_234_567)
    _generative_run(tmp_path, "3", "rbm", 0, 30.0, 2.0, [5000])  # no params in its summary
    table = report(tmp_path)
    header = table.splitlines()[0]
    assert header == (
        "| group | metric | runs | solved | failed | interrupted | FID | floor | FID/floor | KID "
        "| confident | wall (s) | params | images/s |"
    )
    assert (
        "| model=dcgan | eval/fid | 3 | 0/3 | 0 | 0 | 5 | 2 | 3 | 0.5 | 0.2 | 61 | 1,234,567 "
        "| 200 |" in table
    )
    assert (
        "| model=rbm | eval/fid | 1 | 0/1 | 0 | 0 | 30 | 2 | 15 | 3 | 0.033 | 60 | — | 5,000 |"
        in table
    )
    with (tmp_path / "report.csv").open() as f:
        rows = {row["group"]: row for row in csv.DictReader(f)}
    assert rows["model=dcgan"]["fid_over_floor_median"] == "3.0"
    assert rows["model=rbm"]["params"] == ""


def test_a_mixed_sweep_keeps_the_rl_columns(tmp_path):
    _generative_run(tmp_path, "0", "dcgan", 0, 6.0, 2.0, [100])
    _run(tmp_path, "1", ["agent=dqn", "seed=0"], "completed", 500.0, None)
    assert "final median" in report(tmp_path).splitlines()[0]
