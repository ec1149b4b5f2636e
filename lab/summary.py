"""``summary.json``: the contract every report and script reads (docs/contracts.md)."""

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATUSES = ("completed", "solved", "interrupted", "failed")


@dataclass
class Summary:
    status: str
    family: str
    algo: str
    task: str
    seed: int
    device: str
    steps: int
    wall_seconds: float
    metrics: dict[str, float]
    best: dict[str, float]
    threshold: dict
    settings: str | None = None  # RL: the conf/tuned file the agent took, or its defaults
    # Trainable parameters of the task's nets (lab.task.trainable_parameters): an RL agent's
    # (DQN's online net, not its target copy), or every net a generative model trains (a GAN's
    # generator and discriminator both); frozen ones (init_from.freeze) do not count.
    params: int | None = None
    params_by_net: dict[str, int] | None = None
    init_from: dict | None = None  # a warm start: its checkpoint, source and tensor counts
    actors_replaced: int | None = None  # a3c/impala: lost workers or actors replaced in the run
    error: str | None = None
    exit_code: int = field(default=0, repr=False)  # for the process, not the file

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        del data["exit_code"]
        for optional in (
            "settings",
            "params",
            "params_by_net",
            "init_from",
            "actors_replaced",
            "error",
        ):
            if data[optional] is None:
                del data[optional]
        return data


def write_summary(summary: Summary, path: Path) -> None:
    """Atomically, so a reader never sees half a summary."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def print_summary(summary: Summary, run_dir: Path) -> None:
    """One screen: what ran, how it ended, the final and best evaluation, where the files are."""
    s = summary
    lines = [
        "",
        f"lab: {s.algo} on {s.task}, seed {s.seed}: {s.status.upper()} "
        f"after {s.steps:,} steps in {s.wall_seconds:.1f} s on {s.device}",
    ]
    if s.settings:
        lines.append(f"  settings: {s.settings}")
    if s.params is not None:
        nets = ", ".join(f"{name} {n:,}" for name, n in (s.params_by_net or {}).items())
        lines.append(f"  params: {s.params:,} trainable ({nets})")
    if s.init_from:
        lines.append(f"  init_from: {s.init_from['path']} ({s.init_from['source']})")
    width = max((len(k) for k in s.metrics), default=0)
    for key, value in s.metrics.items():
        best = s.best.get(key)
        extra = f"   (best {best:.4g})" if best is not None and best != value else ""
        lines.append(f"  {key:<{width}}  {value:>10.4g}{extra}")
    t = s.threshold
    if t.get("value") is not None:
        reached = (
            f"reached at step {t['reached_step']:,} ({t['reached_seconds']:.1f} s)"
            if t["reached_step"] is not None
            else "not reached"
        )
        lines.append(f"  threshold {t['metric']} >= {t['value']:g}: {reached}")
    if s.error:
        lines.append(f"  error: {s.error}")
    curves = run_dir / "media" / "curves.png"
    if curves.is_file():
        lines.append(f"  curves: {curves}")
    lines.append(f"  run dir: {run_dir}")
    print("\n".join(lines), flush=True)


def read_summaries(root: Path) -> list[tuple[Path, dict]]:
    """Every ``summary.json`` under ``root`` (a run, a sweep or a folder of either)."""
    found = []
    for path in sorted(root.rglob("summary.json")):
        try:
            found.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError:
            continue  # written atomically, so only a foreign file can be half a JSON
    return found
