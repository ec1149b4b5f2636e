"""The worker pool under A3C and IMPALA (lab/rl/workers.py), with toy workers: credits,
lost workers replaced, workers that keep dying, shutdown."""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.rl import restarts, workers
from lab.rl.workers import (
    RestartLimit,
    WorkerFailed,
    WorkerLink,
    WorkerPool,
    choose_start_method,
)
from tests.conftest import ROOT

UNIT = 4  # credits per chunk a toy worker takes


def take_and_report(link: WorkerLink, failing: int | None = None, hold: int | None = None):
    """Take up to 3 chunks of credits at a time and report them. Worker ``failing`` raises at
    once (were it to wait for credits, the other worker might take them all), each replacement
    of it too; worker ``hold`` takes credits and never reports them (its replacement does)."""
    if link.wid == failing:
        raise ValueError("broken on purpose")
    while hold not in (None, link.wid) and link._in_flight[hold] == 0 and link.running():
        time.sleep(0.001)  # until worker ``hold`` sits on some: else this one might take all
    while link.running():
        chunks, taken = link.take(3, UNIT)
        if chunks == 0:
            link.sleep()
            continue
        while link.wid == hold and link.incarnation == 0:
            time.sleep(0.05)
        link.report((chunks * UNIT, taken), credits=chunks * UNIT)


def raise_once(link: WorkerLink) -> None:
    """Worker 1 raises the first time; its replacement works."""
    take_and_report(link, failing=1 if link.incarnation == 0 else None)


def die_inside_take(link: WorkerLink, inside) -> None:
    """Worker 0's first incarnation is killed inside ``take`` after it took credits and before
    it booked them: the lock stays held and the credits vanish with it."""
    if link.wid == 0 and link.incarnation == 0:
        while link._credits.value <= 0:  # until the grant
            time.sleep(0.001)
        link._lock.acquire()
        link._credits.value -= 3 * UNIT
        inside.set()
        os.kill(os.getpid(), signal.SIGKILL)
    inside.wait(timeout=10)  # else worker 1 might use the whole grant first
    take_and_report(link)


def never_stop(link: WorkerLink) -> None:
    """A stuck worker: it never asks whether it should go on."""
    while True:
        time.sleep(0.05)


def _pool(*args, target=take_and_report, **kwargs) -> WorkerPool:
    return WorkerPool(target=target, args=args, workers=2, name="toy", **kwargs)


def _use(pool: WorkerPool, credits: int) -> list[tuple[int, int]]:
    """Grant ``credits`` and read the reports until they are used."""
    return list(pool.use(credits))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_credits_are_used_exactly_and_the_clock_counts_them():
    pool = _pool()
    try:
        for grant in (10, 1, 100):
            used = sum(chunk for chunk, _ in _use(pool, grant))
            assert grant <= used < grant + UNIT  # whole chunks: less than one over
        assert max(taken for _, taken in _use(pool, 40)) == 12 + 4 + 100 + 40
        pool.set_taken(0)  # as on a resume at step 0
        assert max(taken for _, taken in _use(pool, 8)) == 8
    finally:
        pool.close()


def test_a_stop_takes_back_the_credits_not_yet_taken():
    pool = _pool()
    try:
        used = sum(chunk for chunk, _ in pool.use(1_000_000, stop=lambda: True))
        assert used < 100_000  # what the workers took before the first report was read
    finally:
        pool.close()


def test_a_worker_that_raises_is_replaced_and_the_grant_is_used():
    pool = _pool(target=raise_once)
    try:
        first = pool.processes[1]
        first.join(timeout=5)  # it raised at once
        used = sum(chunk for chunk, _ in _use(pool, 1000))
        assert 1000 <= used < 1000 + UNIT
        assert pool.deaths.replaced == 1
        assert pool.processes[1] is not first and pool.processes[1].is_alive()
    finally:
        pool.close()


def test_a_worker_that_keeps_raising_fails_the_pool_in_one_line_naming_its_error():
    pool = _pool(1, restarts=RestartLimit(deaths=2, seconds=60))
    processes = list(pool.processes)
    try:
        started = time.monotonic()
        message = (
            r"^toy workers keep dying \(3 within 60 s, more than agent.max_restarts=2\); "
            r"the last, worker 1, raised ValueError: broken on purpose$"
        )
        with pytest.raises(WorkerFailed, match=message):
            _use(pool, 10_000_000)  # worker 0 would report for minutes
        assert time.monotonic() - started < 5.0
        processes += pool.processes
    finally:
        pool.close()
    assert not any(p.is_alive() for p in processes)


def test_a_killed_worker_is_replaced_and_its_credits_in_flight_go_to_the_others():
    pool = _pool(None, 0)  # worker 0 sits on the credits it takes until it is killed
    try:
        killer = threading.Timer(0.5, os.kill, (pool.processes[0].pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        used = sum(chunk for chunk, _ in _use(pool, 200))
        assert 200 <= used < 200 + UNIT  # worker 0's chunks were redone, none counted twice
        assert time.monotonic() - started < 0.5 + 2.0
        assert pool.deaths.replaced == 1
        assert sum(chunk for chunk, _ in _use(pool, 100)) >= 100  # the replacement works
    finally:
        killer.cancel()
        pool.close()


def test_a_worker_killed_holding_the_credits_lock_is_replaced_and_its_credits_redone():
    pool = _pool(multiprocessing.get_context("fork").Event(), target=die_inside_take)
    try:
        started = time.monotonic()
        used = sum(chunk for chunk, _ in _use(pool, 400))
        assert 400 <= used < 400 + UNIT  # the 12 credits it took unbooked were given back
        assert time.monotonic() - started < 2 * workers.LOCK_SECONDS + 1.0
        assert pool.deaths.replaced == 1
        assert sum(chunk for chunk, _ in _use(pool, 100)) >= 100  # and the pool goes on
    finally:
        pool.close()


def test_restart_limit_counts_deaths_within_its_window(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(restarts.time, "monotonic", lambda: clock[0])
    deaths = restarts.Deaths("toy", RestartLimit(deaths=1, seconds=10))
    deaths.record("worker 0", "was killed by SIGKILL")
    clock[0] = 11.0  # the first has left the window
    deaths.record("worker 0", "was killed by SIGKILL")
    assert deaths.replaced == 2
    clock[0] = 12.0
    with pytest.raises(WorkerFailed, match=r"^toy workers keep dying \(2 within 10 s"):
        deaths.record("worker 1", "exited with code 3")
    with pytest.raises(ConfigError, match=r"agent.max_restarts=-1"):
        restarts.restart_limit(-1, 60)


def test_workers_ignore_sigint_and_sigterm():
    # The main process turns signals into a checkpoint and stops its workers itself.
    pool = _pool()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(pool.processes[0].pid, sig)
        time.sleep(0.3)
        assert pool.processes[0].is_alive()
        assert sum(chunk for chunk, _ in _use(pool, 100)) >= 100  # and still work
    finally:
        pool.close()


def test_close_kills_a_worker_that_does_not_stop(monkeypatch):
    monkeypatch.setattr(workers, "CLOSE_SECONDS", 0.3)
    pool = WorkerPool(target=never_stop, args=(), workers=2, name="toy")
    processes = list(pool.processes)
    started = time.monotonic()
    pool.close()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert [p.exitcode for p in processes] == [-signal.SIGKILL] * 2


def test_close_lets_healthy_workers_stop_by_themselves():
    pool = _pool()
    processes = list(pool.processes)
    _use(pool, 10)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 1.0  # one idle wait, not the kill deadline
    assert [p.exitcode for p in processes] == [0, 0]
    pool.close()  # a second close is a no-op


ORPHAN_SCRIPT = """
import time
from lab.rl.workers import WorkerPool
from tests.test_a3c_workers import take_and_report
pool = WorkerPool(target=take_and_report, args=(), workers=2)
print(*[p.pid for p in pool.processes], flush=True)
time.sleep(60)
"""


def test_workers_exit_when_the_main_process_is_killed():
    main = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        pids = [int(pid) for pid in main.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        main.kill()  # no close(), no atexit: only the workers' own check can end them
        main.wait()
        deadline = time.monotonic() + 2.0
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if alive(pid)]
    finally:
        main.kill()
        for pid in [pid for pid in pids if alive(pid)]:
            os.kill(pid, signal.SIGKILL)


def test_start_method_is_fork_only_while_the_process_has_one_thread():
    assert choose_start_method(None) == "fork"  # pytest runs tests on the main thread alone
    assert choose_start_method("spawn") == "spawn"
    with pytest.raises(ConfigError, match=r"agent.start_method=threads: use one of"):
        choose_start_method("threads")
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert choose_start_method(None) == "forkserver"
    finally:
        release.set()
        other.join()
