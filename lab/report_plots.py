"""The report's plots: learning curves (mean ± std over seeds, on one step grid) and bars.

``group_curves`` returns the numbers a group's curves are drawn from, so they can be checked
without pixels; ``learning_curves`` and ``bars`` draw figures; ``plot`` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lab.report import Group, Run


APART_NOTE = " that ended\ndashed: the others, × where one failed or was interrupted"


class SeedCurve(NamedTuple):
    """One run's evaluations of a metric, by step."""

    run: Run
    steps: np.ndarray
    values: np.ndarray


class Curve(NamedTuple):
    """A group's mean and std over seeds at each step of its grid."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int  # seeds in the mean


class GroupCurves(NamedTuple):
    """What a group's panel draws: the mean (None when no seeds ended) and the seeds apart."""

    mean: Curve | None
    apart: list[SeedCurve]  # seeds drawn on their own, dashed


def _pyplot():
    """pyplot on the file-only backend: a report is written on machines with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluations(run: Run, metric: str) -> SeedCurve | None:
    """A run's evaluations of ``metric`` by step, or None if it has none."""
    points = [(row["step"], row[metric]) for row in run.rows if metric in row]
    if not points:
        return None
    steps, values = np.array(points, dtype=float).T
    return SeedCurve(run, steps, values)


def group_curves(group: Group, metric: str) -> GroupCurves:
    """The group's mean ± std of ``metric`` over seeds on one step grid, and the seeds apart.

    The mean is over the seeds that ended (completed or solved). Its grid is the union of their
    evaluation steps from the latest first evaluation to the earliest last one, where a solved
    seed lasts to the end: it stopped at the threshold, so it stays at its last value rather
    than leave the mean (which would then fall whenever a good seed finishes early). Each seed
    is interpolated linearly onto the grid, so every point averages every seed, and the mean
    does not jump where seeds that evaluate at slightly different steps (2,500 and 2,600)
    begin or end. Seeds that failed, were interrupted or are still running are drawn apart, and
    so is every seed when those that ended share no stretch of steps. Whether lower is better
    (FID) matters to the table's ranking, not here.
    """
    seeds = [c for run in group.runs if (c := evaluations(run, metric)) is not None]
    ended = [c for c in seeds if c.run.ended]
    apart = [c for c in seeds if not c.run.ended]
    if not ended:
        return GroupCurves(None, apart)
    last = max(c.steps[-1] for c in ended)
    start = max(c.steps[0] for c in ended)
    end = min(last if c.run.status == "solved" else c.steps[-1] for c in ended)
    if start > end:
        return GroupCurves(None, seeds)
    grid = np.unique(np.concatenate([c.steps for c in ended]))
    grid = grid[(grid >= start) & (grid <= end)]
    # np.interp holds a seed's last value past its last step: only solved seeds reach there.
    stacked = np.stack([np.interp(grid, c.steps, c.values) for c in ended])
    return GroupCurves(Curve(grid, stacked.mean(0), stacked.std(0), len(ended)), apart)


def _draw_group(ax: Axes, group: Group, curves: GroupCurves) -> None:
    counts = [f"n={curves.mean.n}"] if curves.mean else []
    for status in ("failed", "interrupted", "running"):
        if k := sum(c.run.status == status for c in curves.apart):
            counts.append(f"{k} {status}")
    label, color = f"{group.label} ({', '.join(counts)})", None
    if curves.mean:
        steps, mean, std, _ = curves.mean
        # A single evaluation is a point: a line through one point draws nothing.
        (line,) = ax.plot(steps, mean, marker="o" if len(steps) == 1 else None, label=label)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        label, color = None, line.get_color()
    for seed in curves.apart:
        # An × where a failed or interrupted seed stopped; a running one just ends.
        marker = "x" if seed.run.cut_short else "o" if len(seed.steps) == 1 else None
        (line,) = ax.plot(
            seed.steps,
            seed.values,
            ls="--",
            lw=0.8,
            color=color,
            label=label,
            marker=marker,
            markevery=[len(seed.steps) - 1],
        )
        label, color = None, line.get_color()


def learning_curves(groups: list[Group]) -> Figure | None:
    """One panel per metric, one mean ± std curve per group (``group_curves``)."""
    plt = _pyplot()
    metrics = sorted({g.metric for g in groups if g.metric})
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        apart = False
        for group in (g for g in groups if g.metric == metric):
            curves = group_curves(group, metric)
            _draw_group(ax, group, curves)
            apart = apart or bool(curves.apart)
        title = f"{metric}: mean ± std over seeds" + (APART_NOTE if apart else "")
        ax.set(xlabel="step", ylabel=metric, title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bars(groups: list[Group]) -> Figure:
    """Final metric mean ± std per group; time-to-threshold too, if any run reached it."""
    plt = _pyplot()
    stats = [g.stats() for g in groups]
    reached = any(s["solved"] for s in stats)
    fig, axes = plt.subplots(
        1, 1 + reached, figsize=(6 + 6 * reached, 0.6 * len(stats) + 2), squeeze=False
    )
    labels, y = [s["group"] for s in stats], np.arange(len(stats))
    if reached:
        left = axes[0][0]
        for i, group in enumerate(groups):
            times = [t for r in group.solved() if (t := r.reached()[0]) is not None]
            left.scatter(times, [i] * len(times), color="k", s=10, zorder=3)
        left.barh(y, [s["time_to_threshold_median"] or 0 for s in stats], color="tab:blue")
        left.set(yticks=y, yticklabels=labels, xlabel="seconds", title="median time-to-threshold")
    right = axes[0][-1]
    right.barh(
        y,
        [s["final_mean"] or 0 for s in stats],
        xerr=[s["final_std"] or 0 for s in stats],
        color="tab:orange",
    )
    right.set(yticks=y, yticklabels=[] if reached else labels, xlabel="final metric")
    right.set_title("final metric, mean ± std")
    fig.tight_layout()
    return fig


def plot(groups: list[Group], out: Path) -> list[Path]:
    """Write ``learning_curves.png`` (if any run has evaluations) and ``bars.png`` into ``out``."""
    plt = _pyplot()
    figures = {"learning_curves.png": learning_curves(groups), "bars.png": bars(groups)}
    written = []
    for name, fig in figures.items():
        if fig is not None:
            written.append(out / name)
            fig.savefig(written[-1], dpi=120)
            plt.close(fig)
    return written
