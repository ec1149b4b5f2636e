"""The worker pool under A3C (lab/rl/workers.py), with toy workers: credits, faults, shutdown."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.errors import ConfigError
from lab.rl import workers
from lab.rl.workers import WorkerFailed, WorkerLink, WorkerPool, choose_start_method
from tests.conftest import ROOT

UNIT = 4  # credits per chunk a toy worker takes


def take_and_report(link: WorkerLink, failing: int | None = None) -> None:
    """Take up to 3 chunks of credits at a time and report them; worker ``failing`` raises at
    once (were it to wait for credits, the other worker might take them all)."""
    if link.wid == failing:
        raise ValueError("broken on purpose")
    while link.running():
        chunks, taken = link.take(3, UNIT)
        if chunks == 0:
            link.sleep()
            continue
        link.report((chunks * UNIT, taken))


def never_stop(link: WorkerLink) -> None:
    """A stuck worker: it never asks whether it should go on."""
    while True:
        time.sleep(0.05)


def _pool(failing: int | None = None, target=take_and_report) -> WorkerPool:
    args = () if target is never_stop else (failing,)
    return WorkerPool(target=target, args=args, workers=2, name="toy")


def _use(pool: WorkerPool, credits: int) -> list[tuple[int, int]]:
    """Grant ``credits`` and read the reports until they are used."""
    pool.grant(credits)
    reports, used = [], 0
    for report in pool.reports():
        reports.append(report)
        used += report[0]
        if used >= credits:
            break
    return reports


def _read_all(pool: WorkerPool) -> None:
    for _ in pool.reports():
        pass


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


def test_a_worker_that_raises_fails_the_pool_at_once_while_another_keeps_reporting():
    pool = _pool(failing=1)
    processes = list(pool.processes)
    try:
        pool.grant(10_000_000)  # worker 0 would report for minutes
        started = time.monotonic()
        with pytest.raises(
            WorkerFailed, match=r"^toy worker 1 raised: ValueError: broken on purpose$"
        ):
            _read_all(pool)
        assert time.monotonic() - started < 1.0
    finally:
        pool.close()
    assert not any(p.is_alive() for p in processes)


def test_a_worker_that_raised_and_exited_is_reported_with_its_error_not_as_dead():
    # Its error waits in the queue (here behind worker 0's reports) when the clock finds it gone.
    pool = _pool(failing=1)
    try:
        pool.grant(1000)
        pool.processes[1].join(timeout=5)
        assert pool.processes[1].exitcode == 1
        with pytest.raises(
            WorkerFailed, match=r"toy worker 1 raised: ValueError: broken on purpose"
        ):
            _read_all(pool)
    finally:
        pool.close()


def test_a_killed_worker_fails_the_pool_within_a_poll_while_another_keeps_reporting():
    pool = _pool()
    try:
        _use(pool, 10)  # both workers are idle now
        os.kill(pool.processes[0].pid, signal.SIGKILL)
        pool.processes[0].join(timeout=5)
        pool.grant(10_000_000)
        started = time.monotonic()
        with pytest.raises(WorkerFailed, match=r"^toy worker 0 died \(killed by SIGKILL\)$"):
            _read_all(pool)
        assert time.monotonic() - started < workers.POLL_SECONDS + 0.5
    finally:
        pool.close()


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
    pool = _pool(target=never_stop)
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
