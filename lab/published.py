"""Published results beside lab's: the figures in ``lab/published.yaml`` (rl-zoo3, CleanRL).

``published_for(agent, env)`` answers what the report's "published" column shows for a group:
the figures for the published algorithm that agent is compared with, on that env.
"""

from functools import cache
from pathlib import Path
from typing import NamedTuple

import yaml

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")


class Published(NamedTuple):
    """One published figure: a mean return (± std where given) at a training budget."""

    algo: str  # the published algorithm: DQN, A2C, PPO
    env: str  # lab's env id
    mean: float
    std: float | None
    steps: int  # training budget, env steps
    source: str
    url: str
    measured_on: str | None = None  # the env the source used, where lab's is a newer version

    def text(self) -> str:
        """``500 ± 0 @50k (rl-zoo3 DQN)``."""
        spread = f" ± {self.std:.4g}" if self.std is not None else ""
        where = f", {self.measured_on}" if self.measured_on else ""
        return f"{self.mean:.4g}{spread} @{budget(self.steps)} ({self.source} {self.algo}{where})"


def budget(steps: float) -> str:
    """Env steps the way the sources print them: 50k, 1M, 1.5M; 3 digits (100,003 is 100k)."""
    steps = float(f"{steps:.3g}")  # rounded before the unit is chosen: 999,999 is 1M
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if steps >= size:
            return f"{steps / size:g}{unit}"
    return f"{steps:g}"


@cache
def _load(path: Path) -> tuple[dict[str, str], tuple[Published, ...]]:
    data = yaml.safe_load(path.read_text())
    urls = {name: source["url"] for name, source in data["sources"].items()}
    results = tuple(
        Published(
            algo=r["algo"],
            env=r["env"],
            mean=float(r["mean"]),
            std=None if r.get("std") is None else float(r["std"]),
            steps=int(r["steps"]),
            source=r["source"],
            url=urls[r["source"]],
            measured_on=r.get("measured_on"),
        )
        for r in data["results"]
    )
    return data["agents"], results


def published_for(agent: str, env: str, path: Path = PUBLISHED_FILE) -> list[Published]:
    """The figures for ``agent``'s published algorithm on ``env``, in the file's order."""
    agents, results = _load(path)
    algo = agents.get(agent)
    return [r for r in results if r.algo == algo and r.env == env]
