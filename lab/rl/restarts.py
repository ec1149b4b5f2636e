"""Lost workers and actors: counted against a limit, past which the run fails in one line.

The process pool (lab/rl/workers.py) and IMPALA's Ray actors (lab/rl/impala_ray.py) replace a
worker that raised or died; a worker that dies over and over is a bug, not bad luck.
"""

import collections
import logging
import time
from dataclasses import dataclass

from lab.errors import ConfigError, RunFailed

log = logging.getLogger("lab")


class WorkerFailed(RunFailed):
    """Workers keep dying (``RestartLimit``), or one died where the pool cannot recover."""


@dataclass(frozen=True)
class RestartLimit:
    """More than ``deaths`` workers lost within ``seconds`` fails the run instead of
    replacing them: a worker that dies over and over (a broken env) is a bug, not bad luck."""

    deaths: int = 5
    seconds: float = 60.0


def restart_limit(max_restarts: int, restart_window_s: float) -> RestartLimit:
    """The agent keys ``max_restarts`` and ``restart_window_s``, checked."""
    if max_restarts < 0 or restart_window_s <= 0:
        raise ConfigError(
            f"agent.max_restarts={max_restarts}, agent.restart_window_s={restart_window_s}: "
            "need max_restarts >= 0 (0: the first lost worker fails the run) and a window > 0"
        )
    return RestartLimit(max_restarts, restart_window_s)


class Deaths:
    """Counts lost workers against a ``RestartLimit``; the pool and the Ray actors share it."""

    def __init__(self, name: str, limit: RestartLimit):
        self.name, self.limit = name, limit
        self.replaced = 0  # over the whole run (a resume restores it)
        self._times: collections.deque[float] = collections.deque()

    def record(self, what: str, cause: str) -> None:
        """One more death of ``what`` (e.g. "worker 1") from ``cause``: logged, or raises
        ``WorkerFailed`` in one line when the limit is passed."""
        now = time.monotonic()
        self._times.append(now)
        while self._times[0] < now - self.limit.seconds:
            self._times.popleft()
        if len(self._times) > self.limit.deaths:
            raise WorkerFailed(
                f"{self.name} workers keep dying ({len(self._times)} within "
                f"{self.limit.seconds:g} s, more than agent.max_restarts={self.limit.deaths}); "
                f"the last, {what}, {cause}"
            )
        self.replaced += 1
        log.warning("%s %s %s: replaced (%d so far)", self.name, what, cause, self.replaced)
