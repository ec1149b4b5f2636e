"""Aggregating metrics between log rows, and the progress bar."""

import sys
import time
from collections import defaultdict

from tqdm import tqdm

# No monitor thread (it only tunes refresh rates): a process with one thread can fork its A3C
# workers safely, also in the second job of a sweep (lab/rl/workers.py, choose_start_method).
tqdm.monitor_interval = 0

COUNTER_PREFIX = "counter/"  # cumulative counts a task reports; logged as train/<name> and a rate


class MetricWindow:
    """Pools what ``train_step`` returned since the last row.

    Lists (e.g. episode returns) are pooled and averaged; scalars are averaged; counters
    (``counter/<name>``) keep their last value and add ``perf/<name>_per_s``.
    """

    def __init__(self, step_unit: str, headline_metric: str):
        self.step_rate_key = f"perf/{step_unit}_per_s"
        self.headline_metric = headline_metric  # the task's own, for the progress bar
        self.values: dict[str, list[float]] = defaultdict(list)
        self.counters: dict[str, float] = {}
        self.start_counters: dict[str, float] = {}
        self.start_step = 0
        self.start_time = 0.0
        self.headline: float | None = None

    def begin(self, step: int, elapsed: float, counters: dict[str, float]) -> None:
        """Where the first window starts: before the first ``train_step``, so its rates are
        taken over the time that step really took."""
        self.start_step, self.start_time = step, elapsed
        self.start_counters.update(counters)

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            if key.startswith(COUNTER_PREFIX):
                self.counters[key] = value
                self.start_counters.setdefault(key, value)
            elif isinstance(value, list):
                self.values[key].extend(value)
            else:
                self.values[key].append(value)
        value = metrics.get(self.headline_metric)
        if isinstance(value, list):  # e.g. the returns of the episodes that just ended
            value = sum(value) / len(value) if value else None
        if value is not None:
            self.headline = value

    def pending(self) -> bool:
        return bool(self.values)

    def flush(self, step: int, elapsed: float) -> dict[str, float]:
        """The row for this window; starts the next one."""
        row = {k: sum(v) / len(v) for k, v in sorted(self.values.items()) if v}
        seconds = max(elapsed - self.start_time, 1e-9)
        for key, value in self.counters.items():
            name = key.removeprefix(COUNTER_PREFIX)
            row[f"train/{name}"] = value
            row[f"perf/{name}_per_s"] = (value - self.start_counters[key]) / seconds
        row[self.step_rate_key] = (step - self.start_step) / seconds
        self.values.clear()
        self.start_counters = dict(self.counters)
        self.start_step, self.start_time = step, elapsed
        return row

    def postfix(self) -> dict[str, str]:
        if self.headline is None:
            return {}
        return {self.headline_metric.rsplit("/", 1)[-1]: f"{self.headline:.4g}"}


class ProgressBar:
    """tqdm on a terminal; silent when stderr is not one (CI logs, sweeps)."""

    def __init__(self, total: int, initial: int, desc: str):
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="step",
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
            smoothing=0.1,
        )
        self.extra: dict[str, str] = {}
        self.last_refresh = 0.0

    def update(self, step: int, postfix: dict[str, str]) -> None:
        # A last vector step may overshoot the budget: the bar ends at its total all the same.
        self.bar.update(min(step, self.bar.total) - self.bar.n)
        now = time.monotonic()
        if now - self.last_refresh > 0.5:
            self.bar.set_postfix(postfix | self.extra, refresh=False)
            self.last_refresh = now

    def set_eval(self, value: float) -> None:
        """The latest value of the task's threshold metric (eval return, FID)."""
        self.extra = {"eval": f"{value:.4g}"}

    def close(self) -> None:
        self.bar.close()
