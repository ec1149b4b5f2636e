"""``python -m lab.report DIR``: one table and a few plots for a sweep or a folder of runs.

Reads every run under DIR (a folder with ``summary.json`` or ``metrics.jsonl``), groups runs
that differ only by seed, and writes ``report.md``, ``report.csv``, ``learning_curves.png``
and ``bars.png`` into DIR (or ``--out``). It prints the markdown table. The table's columns are
``COLUMNS``, the one list the markdown, the CSV and the printed table come from: a benchmark
that needs a column adds it there. Beside lab's final mean (with a 95% bootstrap confidence
interval over seeds) stands the published figure for the same algorithm and env
(``lab/published.yaml``), and a line under the table gives the gap. Runs still going (no
summary yet) are counted as running; failed and interrupted runs are counted apart from the
finished ones, listed under the table and drawn apart from the mean (``lab.report_plots``).
"""

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import bootstrap

from lab.published import Published, budget, published_for
from lab.report_columns import COLUMNS, GENERATIVE_COLUMNS, Column, fmt, median
from lab.report_plots import plot

IGNORED_OVERRIDES = ("seed=", "hydra.", "resume=")
ENDED = ("completed", "solved")  # a run whose last evaluation is its final one
CUT_SHORT = ("failed", "interrupted")  # stopped before its budget: marked, never averaged
NOTHING_REACHED = "No run reached its threshold: bars.png has no time-to-threshold panel."
GAP_HEADING = "Gap to published (lab's final mean minus the published mean):"


@dataclass
class Run:
    path: Path
    summary: dict | None
    rows: list[dict]
    overrides: list[str]

    @property
    def status(self) -> str:
        return self.summary["status"] if self.summary else "running"

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def cut_short(self) -> bool:
        return self.status in CUT_SHORT

    @property
    def metric(self) -> str | None:
        if self.summary and self.summary["threshold"]["metric"]:
            return self.summary["threshold"]["metric"]
        for key in ("eval/return_mean", "eval/fid"):
            if any(key in row for row in self.rows):
                return key
        return None

    def final(self, metric: str) -> float | None:
        if self.summary and metric in self.summary.get("metrics", {}):
            return self.summary["metrics"][metric]
        values = [row[metric] for row in self.rows if metric in row]
        return values[-1] if values else None

    def reached(self) -> tuple[float | None, int | None]:
        threshold = (self.summary or {}).get("threshold") or {}
        return threshold.get("reached_seconds"), threshold.get("reached_step")


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def metric(self) -> str | None:
        return next((r.metric for r in self.runs if r.metric), None)

    def finished(self) -> list[Run]:
        """The runs that ended (completed or solved): those the final metric is judged on."""
        return [r for r in self.runs if r.ended]

    def finals(self) -> list[float]:
        metric = self.metric
        return [v for r in self.finished() if metric and (v := r.final(metric)) is not None]

    def final_ci(self) -> tuple[float, float] | None:
        """The 95% confidence interval of the final mean over seeds (None below two seeds)."""
        return bootstrap_ci(self.finals())

    def bests(self) -> list[float]:
        """Each finished run's best evaluation (summary.json ``best``)."""
        bests = [r.summary["best"].get(self.metric) for r in self.finished()]
        return [v for v in bests if v is not None]

    def published(self) -> list[Published]:
        """The published figures for this group's agent and env (``lab/published.yaml``)."""
        summary = next((r.summary for r in self.runs if r.summary), None)
        return published_for(summary["algo"], summary["task"]) if summary else []

    def solved(self) -> list[Run]:
        return [r for r in self.finished() if r.reached()[1] is not None]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def generative(self) -> bool:
        return any(r.summary and r.summary.get("family") == "generative" for r in self.runs)

    def stats(self, columns: list[Column] | None = None) -> dict:
        """The group's row of the table: every column (of ``COLUMNS`` by default) by its key."""
        return {column.key: column.value(self) for column in columns or COLUMNS}


def columns_for(groups: list[Group]) -> list[Column]:
    """``GENERATIVE_COLUMNS`` when every group holds generative runs, else ``COLUMNS``."""
    if groups and all(g.generative for g in groups):
        return GENERATIVE_COLUMNS
    return COLUMNS


def bootstrap_ci(
    values: list[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (seeds' finals).

    rliable's advice for a handful of seeds: an interval, not a std. The resampling RNG is
    seeded so that the same runs always give the same table. None below two values.
    """
    if len(values) < 2:
        return None
    result = bootstrap(
        (np.asarray(values, dtype=float),),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _job_order(path: Path) -> tuple:
    """Natural order: sweep job 2 before job 10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.parts)


def load_runs(root: Path) -> list[Run]:
    dirs = {p.parent for name in ("summary.json", "metrics.jsonl") for p in root.rglob(name)}
    runs = []
    for run_dir in sorted(dirs, key=_job_order):
        summary_file, metrics_file = run_dir / "summary.json", run_dir / "metrics.jsonl"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
        rows = []
        if metrics_file.is_file():
            for line in metrics_file.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a run still writing its last line
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        runs.append(Run(run_dir, summary, rows, list(overrides or [])))
    return runs


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs whose overrides differ only by seed share a group, labelled by what differs."""

    def key(run: Run) -> tuple[str, ...]:
        kept = [o for o in run.overrides if not o.lstrip("+~").startswith(IGNORED_OVERRIDES)]
        if not kept and run.summary:
            return (f"{run.summary['algo']} {run.summary['task']}",)
        return tuple(sorted(kept))

    keys = {id(run): key(run) for run in runs}
    # Overrides every run shares say nothing about the difference: leave them out of labels,
    # unless there is only one group, which is then labelled in full.
    common = set.intersection(*map(set, keys.values())) if len(set(keys.values())) > 1 else set()
    groups: dict[str, Group] = {}
    for run in runs:
        label = " ".join(o for o in keys[id(run)] if o not in common) or run.path.name
        groups.setdefault(label, Group(label)).runs.append(run)
    return list(groups.values())


def gap_line(group: Group) -> str | None:
    """lab's final mean minus each published mean, and whether lab's 95% CI holds it."""
    published, finals = group.published(), group.finals()
    if not published or not finals:
        return None
    mean, ci = statistics.fmean(finals), group.final_ci()
    steps = median([r.summary["steps"] for r in group.finished()])
    lab = f"{fmt(mean)} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else f"{fmt(mean)}, no CI"
    gaps = []
    for p in published:
        inside = "" if ci is None else "inside" if ci[0] <= p.mean <= ci[1] else "outside"
        held = f", {inside} lab's CI" if inside else ""
        gaps.append(
            f"{mean - p.mean:+.4g} against {p.source} {p.algo}'s {fmt(p.mean)} "
            f"@{budget(p.steps)}{held}"
        )
    seeds = f"{len(finals)} seed{'s' * (len(finals) > 1)}"
    return f"- {group.label} (lab: {lab}, {seeds} at {budget(steps)}): " + "; ".join(gaps)


def markdown(groups: list[Group], runs: list[Run]) -> str:
    """The table (a row per group, the titled ``COLUMNS``) and the notes under it."""
    columns = columns_for(groups)
    shown = [c for c in columns if c.title]
    rows = [g.stats(columns) for g in groups]
    lines = ["| " + " | ".join(c.title for c in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(c.text(row) for c in shown) + " |" for row in rows]
    gaps = [line for g in groups if (line := gap_line(g))]
    if gaps:
        lines += ["", GAP_HEADING, "", *gaps]
    failed = [r for r in runs if r.status == "failed"]
    interrupted = [r for r in runs if r.status == "interrupted"]
    running = [r for r in runs if r.status == "running"]
    if failed:
        lines += ["", f"Failed runs ({len(failed)}):", ""]
        lines += [f"- `{r.path}`: {r.summary.get('error', '?')}" for r in failed]
    if interrupted:
        lines += ["", f"Interrupted runs ({len(interrupted)}):", ""]
        lines += [f"- `{r.path}`: at step {r.summary.get('steps', '?')}" for r in interrupted]
    if running:
        lines += ["", f"Runs without a summary yet (running or killed): {len(running)}", ""]
        lines += [f"- `{r.path}`" for r in running]
    if not any(row["solved"] for row in rows):
        lines += ["", NOTHING_REACHED]
    return "\n".join(lines) + "\n"


def write_csv(groups: list[Group], path: Path) -> None:
    columns = columns_for(groups)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c.key for c in columns])
        writer.writeheader()
        writer.writerows(g.stats(columns) for g in groups)


def report(root: Path, out: Path | None = None) -> str:
    runs = load_runs(root)
    if not runs:
        raise SystemExit(f"error: {root}: no runs here (no summary.json or metrics.jsonl below it)")
    out = out or root
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    table = markdown(groups, runs)
    (out / "report.md").write_text(f"# Report: {root}\n\n{table}")
    write_csv(groups, out / "report.csv")
    plot(groups, out)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lab.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("root", type=Path, help="a sweep directory, a run, or a folder of runs")
    parser.add_argument("--out", type=Path, help="where to write the report (default: ROOT)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root}: no such directory", file=sys.stderr)
        sys.exit(2)
    print(report(args.root, args.out), end="")
    print(f"wrote report.md, report.csv and plots to {args.out or args.root}")


if __name__ == "__main__":
    main()
