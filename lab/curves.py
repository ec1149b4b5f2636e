"""A run's learning curves as one PNG (``media/curves.png``): what a dashboard would show,
with no account, no server and no code.

Panels: the evaluation metric against the step with the threshold drawn, the task's headline
training metric, and every ``train/*loss*`` the task logs. Read from ``metrics.jsonl``, so the
picture is always what the file says.
"""

import json
from pathlib import Path

PANEL_INCHES = (4.2, 3.0)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that hold ``key``."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(
    rows: list[dict],
    path: Path,
    eval_key: str,
    threshold: float | None,
    headline: str,
    title: str,
) -> Path | None:
    """Write the curves of ``rows`` to ``path``; None when nothing has been logged yet."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    losses = sorted({k for r in rows for k in r if k.startswith("train/") and "loss" in k})
    keys = [k for k in (eval_key, headline, *losses) if series(rows, k)[0]]
    if not keys:
        return None
    fig = Figure(figsize=(PANEL_INCHES[0] * len(keys), PANEL_INCHES[1]), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        steps, values = series(rows, key)
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        if key == eval_key and threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
            ax.legend(loc="best", fontsize="small")
        ax.set_title(key, fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize="medium")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    tmp.replace(path)  # a viewer never sees half a picture
    return path
