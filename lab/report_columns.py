"""The columns of ``lab.report``'s table: one list per kind of sweep, each column a CSV key, a
markdown heading and how a group of seeds fills it.

``COLUMNS`` serves RL sweeps (and any mix); ``GENERATIVE_COLUMNS`` a sweep of generative models,
whose question is how close to the data each model gets: FID beside the real-vs-real floor it
cannot beat, their ratio, KID, and the cost (wall time, parameters, training images per second).
Every value is the median over a group's finished seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.report import Group, Run


def median(values: list) -> float | None:
    return statistics.median(values) if values else None


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def fmt(value, digits: int = 4) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | str):
        return str(value)
    return f"{value:.{digits}g}"


@dataclass(frozen=True)
class Column:
    """A column of the table: its CSV key, its markdown heading, how a group fills it.

    ``title=None`` keeps a column to the CSV (its value shows inside another column's cell);
    ``cell`` writes the markdown cell from the group's whole row when one value is not enough.
    """

    key: str
    title: str | None
    value: Callable[[Group], object]
    digits: int = 4
    cell: Callable[[dict], str] | None = None

    def text(self, row: dict) -> str:
        return self.cell(row) if self.cell else fmt(row[self.key], self.digits)


def _solved_cell(row: dict) -> str:
    finished = row["runs"] - row["failed"] - row["interrupted"] - row["running"]
    return f"{row['solved']}/{finished}"


def _mean_std_cell(row: dict) -> str:
    if row["final_mean"] is None:
        return "—"
    return f"{fmt(row['final_mean'])} ± {fmt(row['final_std'], 2)}"


def _ci_cell(row: dict) -> str:
    if row["final_mean"] is None or row["final_ci_low"] is None:
        return fmt(row["final_mean"])
    return f"{fmt(row['final_mean'])} [{fmt(row['final_ci_low'])}, {fmt(row['final_ci_high'])}]"


def std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


def _per_run(value: Callable[[Run], float | None]) -> Callable[[Group], float | None]:
    """The median over a group's finished seeds of ``value(run)``, those that have one."""
    return lambda g: median([v for r in g.finished() if (v := value(r)) is not None])


def _final(metric: str) -> Callable[[Group], float | None]:
    return _per_run(lambda r: r.final(metric))


def _count_cell(key: str) -> Callable[[dict], str]:
    """A whole number with thousands separators (1,234,567), or a dash."""
    return lambda row: "—" if row[key] is None else f"{row[key]:,.0f}"


def env_steps_per_s(run: Run) -> float | None:
    """Env steps over the run's wall time (its evaluations inside, a backend's start-up not):
    the throughput a scaling table compares."""
    wall = run.summary.get("wall_seconds")
    return run.summary["steps"] / wall if wall else None


def params(run: Run) -> float | None:
    """summary.json's ``params`` (trainable parameters); older runs have none: a dash."""
    return run.summary.get("params")


# What every table starts with: which runs, and how many ended how.
STATUS_COLUMNS = [
    Column("group", "group", lambda g: g.label),
    Column("metric", "metric", lambda g: g.metric or ""),
    Column("runs", "runs", lambda g: len(g.runs)),
    Column("solved", "solved", lambda g: len(g.solved()), cell=_solved_cell),
    Column("failed", "failed", lambda g: g.count("failed")),
    Column("interrupted", "interrupted", lambda g: g.count("interrupted")),
    Column("running", None, lambda g: g.count("running")),
]

COLUMNS = [
    *STATUS_COLUMNS,
    Column("final_median", "final median", lambda g: median(g.finals())),
    Column("final_mean", "final mean ± std", lambda g: mean(g.finals()), cell=_mean_std_cell),
    Column("final_std", None, lambda g: std(g.finals())),
    Column(
        "final_ci_low",
        "final mean [95% CI]",
        lambda g: ci[0] if (ci := g.final_ci()) else None,
        cell=_ci_cell,
    ),
    Column("final_ci_high", None, lambda g: ci[1] if (ci := g.final_ci()) else None),
    Column("best_mean", "mean best", lambda g: mean(g.bests())),
    Column(
        "time_to_threshold_median",
        "median time-to-threshold (s)",
        lambda g: median([r.reached()[0] for r in g.solved()]),
        digits=3,
    ),
    Column(
        "steps_to_threshold_median",
        "median steps-to-threshold",
        lambda g: median([r.reached()[1] for r in g.solved()]),
    ),
    Column(
        "wall_median",
        "median wall (s)",
        lambda g: median([r.summary["wall_seconds"] for r in g.finished()]),
        digits=3,
    ),
    Column(
        "env_steps_per_s_median",
        "env steps/s",
        _per_run(env_steps_per_s),
        cell=_count_cell("env_steps_per_s_median"),
    ),
    Column("params", "params", _per_run(params), cell=_count_cell("params")),
    Column("published", "published", lambda g: "; ".join(p.text() for p in g.published())),
]


def fid_over_floor(run: Run) -> float | None:
    """FID / the floor (two disjoint real sets' FID): 1 is as close as the scorer can tell."""
    fid, floor = run.final("eval/fid"), run.final("eval/fid_floor")
    return fid / floor if fid is not None and floor else None


def images_per_s(run: Run) -> float | None:
    """The median training throughput a run logged (perf/images_per_s, evaluations excluded)."""
    return median([row["perf/images_per_s"] for row in run.rows if "perf/images_per_s" in row])


GENERATIVE_COLUMNS = [
    *STATUS_COLUMNS,
    Column("fid_median", "FID", _final("eval/fid"), digits=3),
    Column("fid_floor_median", "floor", _final("eval/fid_floor"), digits=3),
    Column("fid_over_floor_median", "FID/floor", _per_run(fid_over_floor), digits=3),
    Column("kid_median", "KID", _final("eval/kid_mean"), digits=3),
    Column("confident_median", "confident", _final("eval/confident"), digits=2),
    Column(
        "wall_median",
        "wall (s)",
        lambda g: median([r.summary["wall_seconds"] for r in g.finished()]),
        digits=3,
    ),
    Column("params", "params", _per_run(params), cell=_count_cell("params")),
    Column(
        "images_per_s_median",
        "images/s",
        _per_run(images_per_s),
        cell=_count_cell("images_per_s_median"),
    ),
]
