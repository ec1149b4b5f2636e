"""``python -m lab.report DIR``: one table and a few plots for a sweep or a folder of runs.

Reads every run under DIR (a folder with ``summary.json`` or ``metrics.jsonl``), groups runs
that differ only by seed, and writes ``report.md``, ``report.csv``, ``learning_curves.png``
and ``bars.png`` into DIR (or ``--out``). It prints the markdown table. Runs still going (no
summary yet) are counted as running; failed runs are listed with their errors.
"""

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IGNORED_OVERRIDES = ("seed=", "hydra.", "resume=")


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
        return [r for r in self.runs if r.status not in ("failed", "running")]

    def stats(self) -> dict:
        metric, done = self.metric, self.finished()
        finals = [v for r in done if metric and (v := r.final(metric)) is not None]
        solved = [r for r in done if r.reached()[1] is not None]
        return {
            "group": self.label,
            "metric": metric or "",
            "runs": len(self.runs),
            "failed": sum(r.status == "failed" for r in self.runs),
            "running": sum(r.status == "running" for r in self.runs),
            "solved": len(solved),
            "final_median": _median(finals),
            "final_mean": statistics.fmean(finals) if finals else None,
            "final_std": statistics.stdev(finals) if len(finals) > 1 else (0.0 if finals else None),
            "time_to_threshold_median": _median([r.reached()[0] for r in solved]),
            "steps_to_threshold_median": _median([r.reached()[1] for r in solved]),
            "wall_median": _median([r.summary["wall_seconds"] for r in done]),
        }


def _median(values: list) -> float | None:
    return statistics.median(values) if values else None


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


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def markdown(groups: list[Group], runs: list[Run]) -> str:
    lines = [
        "| group | metric | runs | solved | failed | final median | final mean ± std | "
        "median time-to-threshold (s) | median steps-to-threshold | median wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        s = group.stats()
        finished = s["runs"] - s["failed"] - s["running"]
        mean_std = (
            f"{_fmt(s['final_mean'])} ± {_fmt(s['final_std'], 2)}"
            if s["final_mean"] is not None
            else "—"
        )
        lines.append(
            f"| {s['group']} | {s['metric'] or '—'} | {s['runs']} | {s['solved']}/{finished} | "
            f"{s['failed']} | {_fmt(s['final_median'])} | {mean_std} | "
            f"{_fmt(s['time_to_threshold_median'], 3)} | {_fmt(s['steps_to_threshold_median'])} | "
            f"{_fmt(s['wall_median'], 3)} |"
        )
    failed = [r for r in runs if r.status == "failed"]
    running = [r for r in runs if r.status == "running"]
    if failed:
        lines += ["", f"Failed runs ({len(failed)}):", ""]
        lines += [f"- `{r.path}`: {r.summary.get('error', '?')}" for r in failed]
    if running:
        lines += ["", f"Runs without a summary yet (running or killed): {len(running)}", ""]
        lines += [f"- `{r.path}`" for r in running]
    return "\n".join(lines) + "\n"


def write_csv(groups: list[Group], path: Path) -> None:
    rows = [g.stats() for g in groups]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["group"])
        writer.writeheader()
        writer.writerows(rows)


def plot(groups: list[Group], out: Path) -> list[Path]:
    """Learning curves (mean ± std over seeds) and bars of time-to-threshold and final metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    metrics = sorted({g.metric for g in groups if g.metric})
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            for group in (g for g in groups if g.metric == metric):
                runs = [r for r in group.runs if any(metric in row for row in r.rows)]
                if not runs:
                    continue
                curves = [
                    [(row["step"], row[metric]) for row in r.rows if metric in row] for r in runs
                ]
                grid = np.unique(np.concatenate([[s for s, _ in c] for c in curves]))
                stacked = np.full((len(curves), len(grid)), np.nan)
                for i, (run, curve) in enumerate(zip(runs, curves, strict=True)):
                    steps, values = np.array(curve).T
                    # A run stopped as solved stays at its last value: dropping it from the mean
                    # would make the curve fall whenever a good seed finishes early.
                    end = grid[-1] if run.status == "solved" else steps[-1]
                    inside = (grid >= steps[0]) & (grid <= end)
                    stacked[i, inside] = np.interp(grid[inside], steps, values)
                mean, std = np.nanmean(stacked, 0), np.nan_to_num(np.nanstd(stacked, 0))
                (line,) = ax.plot(grid, mean, label=f"{group.label} (n={len(curves)})")
                ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set(xlabel="step", ylabel=metric, title=f"{metric}: mean ± std over seeds")
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "learning_curves.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    stats = [g.stats() for g in groups]
    if stats:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(stats) + 2))
        labels = [s["group"] for s in stats]
        y = np.arange(len(stats))
        for i, group in enumerate(groups):
            times = [r.reached()[0] for r in group.finished() if r.reached()[0] is not None]
            left.scatter(times, [i] * len(times), color="k", s=10, zorder=3)
        left.barh(y, [s["time_to_threshold_median"] or 0 for s in stats], color="tab:blue")
        left.set(yticks=y, yticklabels=labels, xlabel="seconds", title="median time-to-threshold")
        right.barh(
            y,
            [s["final_mean"] or 0 for s in stats],
            xerr=[s["final_std"] or 0 for s in stats],
            color="tab:orange",
        )
        right.set(yticks=y, yticklabels=[], xlabel="final metric", title="final metric, mean ± std")
        fig.tight_layout()
        written.append(out / "bars.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


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
