"""Time-to-threshold table of a sweep: ``python -m lab.bench runs/multirun/<date>/<time>``.

Reads every ``summary.json`` under the folder, groups runs by algorithm and task, and prints
the median wall time and env steps to reach the threshold, with the solved count. Runs that
never reached it count as unsolved and are left out of the medians.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def time_to_solve_table(root: Path) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        groups[summary["algo"], summary["task"]].append(summary)
    lines = [
        "| algo | task | solved | median time-to-solve (s) | median steps-to-solve | "
        "median wall (s) | seeds' time-to-solve (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (algo, task), runs in sorted(groups.items()):
        reached = [r["threshold"] for r in runs if r["threshold"]["reached_step"] is not None]
        seconds = [t["reached_seconds"] for t in reached]
        steps = [t["reached_step"] for t in reached]
        per_seed = ", ".join(
            f"{r['threshold']['reached_seconds']:.1f}"
            if r["threshold"]["reached_step"] is not None
            else "—"
            for r in sorted(runs, key=lambda r: r["seed"])
        )
        lines.append(
            f"| {algo} | {task} | {len(reached)}/{len(runs)} | "
            f"{_median(seconds, '.1f')} | {_median(steps, ',.0f')} | "
            f"{_median([r['wall_seconds'] for r in runs], '.1f')} | {per_seed} |"
        )
    return "\n".join(lines)


def _median(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "—"


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python -m lab.bench <sweep or runs folder>")
    print(time_to_solve_table(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
