"""Worker processes paced by the main process: credits, sleep, reports, death, and shutdown.

Algorithm-agnostic. Each worker runs ``target(link, *args)``: through its ``WorkerLink`` it
takes credits (units of work, such as env steps), sleeps while it has none, and reports
messages. The main process's ``WorkerPool`` grants credits, reads the reports, notices a worker
that raised or died, and stops them all. A3C's actor-learners run on it (lab/rl/a3c.py).
"""

import contextlib
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.multiprocessing as mp

from lab.errors import ConfigError

POLL_SECONDS = 0.2  # how often the main process looks at its workers while it waits
IDLE_SECONDS = 0.1  # how long an idle worker sleeps before it looks at `stop` and the main process
CLOSE_SECONDS = 2.0  # how long close() waits for the workers before it kills them
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the main process's: workers ignore them


class WorkerFailed(RuntimeError):
    """A worker raised, or died (killed, out of memory)."""


def choose_start_method(requested: str | None) -> str:
    """How worker processes start. ``None``: fork where that is safe, else forkserver or spawn.

    Fork starts a worker in milliseconds where spawn re-imports torch in each (about 1 s per
    worker, all of it inside the run's time). It is safe when the process has no other thread
    whose locks a child could inherit held: the workers start while the agent is built, before
    the logger and the progress bar start theirs. Under a launcher that runs jobs in threaded
    processes (joblib's loky, Ray) the workers fork from a fresh forkserver instead.
    """
    methods = mp.get_all_start_methods()
    if requested is not None:
        if requested not in methods:
            raise ConfigError(
                f"agent.start_method={requested}: use one of {', '.join(methods)} (or null)"
            )
        return requested
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class WorkerLink:
    """A worker's end of the pool: credits to take, a wake-up to sleep on, reports to send."""

    def __init__(self, wid: int, credits, taken, wake, reports, stop):
        self.wid = wid
        self._credits, self._taken, self._wake = credits, taken, wake
        self._reports, self._stop = reports, stop

    def running(self) -> bool:
        """Until the pool closes, or the main process is gone: leave no orphan behind."""
        # parent_process() is the main process, also when a forkserver started this one.
        return not self._stop.is_set() and mp.parent_process().is_alive()

    def take(self, most: int, unit: int) -> tuple[int, int]:
        """Up to ``most`` chunks of ``unit`` credits, the last of which may overshoot them.

        Returns the chunks taken (0: none left) and the credits taken by all workers so far,
        the clock that schedules such as a learning rate's annealing run on.
        """
        with self._credits.get_lock():  # one lock for both, so one worker's schedule reproduces
            left = self._credits.value
            chunks = min(most, -(-left // unit)) if left > 0 else 0
            self._credits.value -= chunks * unit
            self._taken.value += chunks * unit
            return chunks, self._taken.value

    def sleep(self) -> None:
        """Wait for the next grant (or ``IDLE_SECONDS``, to look at ``running`` again)."""
        self._wake.acquire(timeout=IDLE_SECONDS)

    def report(self, message: Any) -> None:
        self._reports.put(("report", self.wid, message))

    def report_error(self, error: BaseException) -> None:
        """``error`` as the runner words a failure: "ValueError: ..." (all lines of it)."""
        self._reports.put(("error", self.wid, f"{type(error).__name__}: {error}"))


def _worker_main(link: WorkerLink, target: Callable[..., None], args: tuple) -> None:
    """A worker process. Signals go to the main process, which stops the workers itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by WorkerPool.__init__
    torch.set_num_threads(1)  # one worker per core
    try:
        target(link, *args)
    except BaseException as error:
        link.report_error(error)
        raise SystemExit(1) from None


class WorkerPool:
    """``workers`` processes that run ``target(link, *args)``, paced by credits from this one.

    The workers start at construction, while the process may still have one thread (see
    ``choose_start_method``). ``args`` reach them as they are under fork, and pickled (shared
    tensors by handle) under forkserver and spawn. ``name`` goes into process names and errors.
    """

    def __init__(
        self,
        *,
        target: Callable[..., None],
        args: tuple,
        workers: int,
        start_method: str | None = None,
        name: str = "lab",
    ):
        self.name = name
        self.start_method = choose_start_method(start_method)
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload([target.__module__])  # imported once, not once per worker
        self._credits = ctx.Value("q", 0)  # what the workers may still take
        self._taken = ctx.Value("q", 0)  # what they took so far: see WorkerLink.take
        # Wakes idle workers. A semaphore, because a Condition's (or Event's) notify waits
        # for every sleeper to wake, and hangs for good if one of them was killed.
        self._wake = ctx.Semaphore(0)
        self._reports = ctx.Queue()
        self._stop = ctx.Event()
        self.processes: list = []
        # A worker ignores SIGINT and SIGTERM from its first line on, but one that came before
        # killed it (a Ctrl-C as the run starts: 4 and 13 of 80 workers signalled at once
        # died, 0 since): the signals stay blocked from before the start until it ignores them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for wid in range(workers):
                link = WorkerLink(
                    wid, self._credits, self._taken, self._wake, self._reports, self._stop
                )
                process = ctx.Process(
                    target=_worker_main,
                    name=f"lab-{name}-worker-{wid}",
                    daemon=True,
                    args=(link, target, args),
                )
                process.start()
                self.processes.append(process)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def set_taken(self, taken: int) -> None:
        """Restart the workers' clock (``WorkerLink.take``) at ``taken``, as on a resume."""
        self._taken.value = taken

    def grant(self, credits: int) -> None:
        """Set the credits and wake the idle workers (nothing may be in flight between grants).

        The lock is taken with a timeout: a worker killed while it held the lock would
        otherwise block the main process for good instead of failing the run. One token per
        worker wakes every sleeper; a token left over only makes a busy worker look once more.
        """
        with self._credits_lock():
            self._credits.value = credits
        for _ in self.processes:
            self._wake.release()

    def revoke(self) -> int:
        """Take back the credits no worker has taken yet (a stop); returns how many."""
        with self._credits_lock():
            left, self._credits.value = self._credits.value, 0
        return left

    @contextlib.contextmanager
    def _credits_lock(self) -> Iterator[None]:
        lock = self._credits.get_lock()
        while not lock.acquire(timeout=POLL_SECONDS):
            self.check()
        try:
            yield
        finally:
            lock.release()

    def reports(self) -> Iterator[Any]:
        """The workers' reports as they arrive, for as long as the caller reads them.

        Raises ``WorkerFailed`` when a worker raised or died, within ``POLL_SECONDS``.
        """
        next_check = 0.0  # at once: a short read may end before the first tick of the clock
        while True:
            # On a clock, not only when the queue runs dry: the other workers may keep it busy.
            if time.monotonic() >= next_check:
                self.check()
                next_check = time.monotonic() + POLL_SECONDS
            try:
                kind, wid, message = self._reports.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "error":
                raise self._raised(wid, message)
            yield message

    def check(self) -> None:
        """Raise ``WorkerFailed`` if a worker has exited: with its error, if it raised one."""
        for wid, process in enumerate(self.processes):
            code = process.exitcode
            if code is None:
                continue
            # A worker that raised sent its error before it exited; it may wait behind reports.
            self._raise_reported_error()
            how = (
                f"killed by {signal.Signals(-code).name}"
                if code < 0
                else f"exited with code {code}"
            )
            raise WorkerFailed(f"{self.name} worker {wid} died ({how})")

    def _raise_reported_error(self) -> None:
        while True:
            try:
                kind, wid, message = self._reports.get_nowait()
            except queue.Empty:
                return
            if kind == "error":
                raise self._raised(wid, message)

    def _raised(self, wid: int, error: str) -> WorkerFailed:
        return WorkerFailed(f"{self.name} worker {wid} raised: {error}")

    def close(self) -> None:
        """Stop every worker: ask, wait up to ``CLOSE_SECONDS``, then kill what is left.

        A healthy worker stops within one unit of work or one idle wait. One that does not is
        stuck, typically on a queue or lock that a killed worker held; workers ignore SIGTERM
        (the main process handles signals), so it is killed outright.
        """
        if not self.processes:
            return
        self._stop.set()
        deadline = time.monotonic() + CLOSE_SECONDS
        for process in self.processes:
            process.join(timeout=max(deadline - time.monotonic(), 0.1))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join()
        self._reports.cancel_join_thread()
        self.processes = []
