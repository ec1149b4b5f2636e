"""Worker processes paced by the main process: credits, sleep, reports, death, and shutdown.

Algorithm-agnostic. Each worker runs ``target(link, *args)``: through its ``WorkerLink`` it
takes credits (units of work, such as env steps), sleeps while it has none, and reports
messages with the credits they used. The main process's ``WorkerPool`` grants credits, reads
the reports, replaces a worker that raised or died (its unreported credits go back to the
others), fails the run when workers keep dying (``RestartLimit``) and stops them all at the
end. A3C's actor-learners and IMPALA's actors run on it (lab/rl/a3c.py, lab/rl/impala*.py).
"""

import collections
import contextlib
import logging
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
from lab.rl.restarts import Deaths, RestartLimit, WorkerFailed
from lab.stop import StopCheck, never

log = logging.getLogger("lab")
POLL_SECONDS = 0.2  # how often the main process looks at its workers while it waits
IDLE_SECONDS = 0.1  # how long an idle worker sleeps before it looks at `stop` and the main process
CLOSE_SECONDS = 2.0  # how long close() waits for the workers before it kills them
LOCK_SECONDS = 2.0  # workers hold the credits lock for microseconds: held this long while a
# worker lies dead, the dead one held it (see WorkerPool._credits_lock)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the main process's: workers ignore them


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

    def __init__(self, wid, incarnation, lock, credits, taken, in_flight, wake, reports, stop):
        self.wid, self.incarnation = wid, incarnation  # incarnation: replacements so far
        self._lock, self._credits, self._taken, self._in_flight = lock, credits, taken, in_flight
        self._wake, self._reports, self._stop = wake, reports, stop

    def seed(self, base: int) -> int:
        """This worker's seed: its own for each worker and each replacement of one."""
        return base + 1000 * (self.wid + 1) + self.incarnation

    def running(self) -> bool:
        """Until the pool closes, or the main process is gone: leave no orphan behind."""
        # parent_process() is the main process, also when a forkserver started this one.
        return not self._stop.is_set() and mp.parent_process().is_alive()

    def take(self, most: int, unit: int) -> tuple[int, int]:
        """Up to ``most`` chunks of ``unit`` credits, the last of which may overshoot them.

        Returns the chunks taken (0: none left) and the credits taken by all workers so far,
        the clock that schedules such as a learning rate's annealing run on.
        """
        with self._lock:  # one lock for all, so one worker's schedule reproduces
            left = self._credits.value
            chunks = min(most, -(-left // unit)) if left > 0 else 0
            self._credits.value -= chunks * unit
            self._taken.value += chunks * unit
            self._in_flight[self.wid] += chunks * unit  # given back if this worker dies
            return chunks, self._taken.value

    def sleep(self) -> None:
        """Wait for the next grant (or ``IDLE_SECONDS``, to look at ``running`` again)."""
        self._wake.acquire(timeout=IDLE_SECONDS)

    def report(self, message: Any, credits: int) -> None:
        """``message``, and the ``credits`` of those taken that it accounts for."""
        self._reports.put(("report", self.wid, (message, credits)))

    def report_error(self, error: BaseException) -> None:
        """``error`` as the runner words a failure: "ValueError: ..." (all lines of it)."""
        self._reports.put(("error", self.wid, f"{type(error).__name__}: {error}"))


def _worker_main(link: WorkerLink, target: Callable[..., None], args: tuple) -> None:
    """A worker process. Signals go to the main process, which stops the workers itself."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by WorkerPool._start
    torch.set_num_threads(1)  # one worker per core
    try:
        target(link, *args)
    except BaseException as error:
        link.report_error(error)
        raise SystemExit(1) from None


class WorkerPool:
    """``workers`` processes that run ``target(link, *args)``, paced by credits from this one.

    The workers start at construction, while the process may still have one thread (see
    ``choose_start_method``); a replacement starts the same way later. ``args`` reach them as
    they are under fork, and pickled (shared tensors by handle) under forkserver and spawn.
    ``name`` goes into process names and errors.
    """

    def __init__(
        self,
        *,
        target: Callable[..., None],
        args: tuple,
        workers: int,
        start_method: str | None = None,
        name: str = "lab",
        restarts: RestartLimit | None = None,
    ):
        self.name, self._target, self._args = name, target, args
        self.start_method = choose_start_method(start_method)
        self._ctx = ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload([target.__module__])  # imported once, not once per worker
        # The credits' books, all under one lock: a plain Lock (a semaphore), not the RLock a
        # synchronized Value carries, so the main process can release it for a worker that
        # died holding it.
        self._lock = ctx.Lock()
        self._credits = ctx.RawValue("q", 0)  # what the workers may still take
        self._taken = ctx.RawValue("q", 0)  # what they took so far: see WorkerLink.take
        self._in_flight = ctx.Array("q", workers, lock=False)  # taken, not reported, by worker
        # Wakes idle workers. A semaphore, because a Condition's (or Event's) notify waits
        # for every sleeper to wake, and hangs for good if one of them was killed.
        self._wake = ctx.Semaphore(0)
        self._reports = ctx.Queue()
        self._stop = ctx.Event()
        self.deaths = Deaths(name, restarts or RestartLimit())
        self._incarnations = [0] * workers
        self._errors: dict[int, str] = {}  # what a worker that raised said, until it exits
        self._received: collections.deque = collections.deque()
        self._outstanding, self._revoked = 0, False
        self.processes: list = [self._start(wid) for wid in range(workers)]

    def _start(self, wid: int):
        link = WorkerLink(
            wid,
            self._incarnations[wid],
            self._lock,
            self._credits,
            self._taken,
            self._in_flight,
            self._wake,
            self._reports,
            self._stop,
        )
        process = self._ctx.Process(
            target=_worker_main,
            name=f"lab-{self.name}-worker-{wid}",
            daemon=True,
            args=(link, self._target, self._args),
        )
        # A worker ignores SIGINT and SIGTERM from its first line on, but one that came before
        # killed it (a Ctrl-C as the run starts: 4 and 13 of 80 workers signalled at once
        # died, 0 since): the signals stay blocked from before the start until it ignores them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return process

    def set_taken(self, taken: int) -> None:
        """Restart the workers' clock (``WorkerLink.take``) at ``taken``, as on a resume."""
        self._taken.value = taken

    def use(self, budget: int, stop: StopCheck = never) -> Iterator[Any]:
        """Grant ``budget`` credits and yield the workers' reports until they are used.

        Once ``stop()`` is true no new work starts; what is in flight still reports. A lost
        worker's unreported credits go to the others, so the grant is used all the same.
        Raises ``WorkerFailed`` when workers keep dying.
        """
        self._outstanding, self._revoked = budget, False
        self._grant(budget)
        while self._outstanding > 0:
            message, credits = self._next()
            self._outstanding -= credits
            yield message
            if stop() and not self._revoked:
                self._outstanding -= self._revoke()
                self._revoked = True

    def _grant(self, credits: int) -> None:
        """Set the credits and wake the idle workers (nothing may be in flight between grants).

        One token per worker wakes every sleeper; a token left over only makes a busy worker
        look once more.
        """
        with self._credits_lock():
            self._credits.value = credits
        for _ in self.processes:
            self._wake.release()

    def _revoke(self) -> int:
        """Take back the credits no worker has taken yet (a stop); returns how many."""
        with self._credits_lock():
            left, self._credits.value = self._credits.value, 0
        return left

    @contextlib.contextmanager
    def _credits_lock(self) -> Iterator[None]:
        """The lock the workers take credits under. A worker killed inside ``WorkerLink.take``
        leaves it held and the shared counts half-updated: the pool releases it in the dead
        worker's place, and ``_replace_dead`` recounts the credits from what it knows."""
        lock = self._lock
        deadline = time.monotonic() + 5 * LOCK_SECONDS
        while not lock.acquire(timeout=LOCK_SECONDS):
            if any(process.exitcode is not None for process in self.processes):
                lock.release()  # for the dead worker: a live one would have let go long ago
            elif time.monotonic() > deadline:  # no worker died: one is stuck inside the lock
                raise WorkerFailed(f"{self.name}: a worker holds the credits lock and is stuck")
        try:
            yield
        finally:
            lock.release()

    def _next(self) -> tuple[Any, int]:
        """The next report and its credits; replaces dead workers every ``POLL_SECONDS``."""
        next_check = 0.0  # at once: a short read may end before the first tick of the clock
        while not self._received:
            # On a clock, not only when the queue runs dry: the other workers may keep it busy.
            if time.monotonic() >= next_check:
                self._replace_dead()
                next_check = time.monotonic() + POLL_SECONDS
            with contextlib.suppress(queue.Empty):
                self._receive(self._reports.get(timeout=POLL_SECONDS))
        return self._received.popleft()

    def _receive(self, item: tuple[str, int, Any]) -> None:
        kind, wid, payload = item
        if kind == "error":  # its process exits next: _replace_dead gives this as the cause
            self._errors[wid] = payload
            return
        with self._credits_lock():
            self._in_flight[wid] -= payload[1]
        self._received.append(payload)

    def _replace_dead(self) -> None:
        """Start a new worker in the place of each that exited; its unreported credits go
        back to the pool (or, after a stop, are no longer awaited)."""
        for wid, process in enumerate(self.processes):
            code = process.exitcode
            if code is None:
                continue
            # What it sent before it died is in the queue: read it before its slot resets.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._receive(self._reports.get_nowait())
            if wid in self._errors:
                cause = f"raised {self._errors.pop(wid)}"
            elif code < 0:
                cause = f"was killed by {signal.Signals(-code).name}"
            else:
                cause = f"exited with code {code}"
            self.deaths.record(f"worker {wid}", cause)
            with self._credits_lock():
                self._in_flight[wid] = 0  # its unreported work: redone by the others
                self._recount_credits()
            self._incarnations[wid] += 1
            self.processes[wid] = self._start(wid)
            self._wake.release()

    def _recount_credits(self) -> None:
        """Credits and the awaited total from the invariant ``outstanding = left to take +
        taken and not reported``, after a worker's death took work away (under the lock).

        A worker that died inside ``take`` may have taken credits without booking them as in
        flight: counting from the invariant, not from the dead worker's books, gives them back.
        """
        unreported = sum(self._in_flight) + sum(credits for _, credits in self._received)
        if self._revoked:  # after a stop nothing new starts: await only what is in flight
            self._outstanding = unreported
        else:
            self._credits.value = self._outstanding - unreported  # < 0: a chunk overshot

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
