"""The file limiter across processes: one total order of bookings, no lock outlives a process."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from resilient_llm import FileRateLimiter

from ._workers import book_at_frozen_clock, die_holding_the_lock, process_context

SETTINGS = {"requests_per_minute": 600, "window": 3}
INTERVAL = (3 + 0.15) / 30


def test_processes_opening_a_fresh_file_together_each_get_slots_of_their_own(
    tmp_path: Path,
) -> None:
    context = process_context()
    path = str(tmp_path / "fresh.sqlite")
    processes, each = 8, 20
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    children = [
        context.Process(
            target=book_at_frozen_clock, args=(path, SETTINGS, each, ready, go, results)
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    go.set()  # all at once on a file that does not exist yet
    answers = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)
    errors = [a for a in answers if isinstance(a, str)]
    assert not errors, errors[0]
    waits = sorted(w for answer in answers for w in answer)
    assert waits == pytest.approx([i * INTERVAL for i in range(processes * each)], abs=1e-5)


def test_a_process_killed_inside_a_booking_leaves_no_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "budget.sqlite")
    context = process_context()
    locked = context.Event()
    child = context.Process(target=die_holding_the_lock, args=(path, locked))
    child.start()
    try:
        assert locked.wait(60), "the child never took the lock"
        # While it lives, the child really holds the file: a booking gives up after its timeout.
        blocked = FileRateLimiter(path, timeout=0.3, **SETTINGS)
        with pytest.raises(TimeoutError, match=r"stayed locked for 0\.3 s"):
            blocked.reserve()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        # The kernel dropped the dead process's locks: the next booking goes at once.
        limiter = FileRateLimiter(path, timeout=30, **SETTINGS)
        started = time.monotonic()
        assert limiter.reserve() == 0.0
        assert time.monotonic() - started < 1.0
        assert blocked.reserve() >= 0.0  # and the one that timed out works again
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_a_limiter_reopens_after_close(tmp_path: Path) -> None:
    with FileRateLimiter(tmp_path / "budget.sqlite", **SETTINGS) as limiter:
        limiter.reserve()
    assert limiter.reserve() == pytest.approx(INTERVAL, abs=0.05)  # the state is in the file
    limiter.close()


def test_limiters_with_one_file_share_one_budget(tmp_path: Path) -> None:
    first = FileRateLimiter(tmp_path / "budget.sqlite", **SETTINGS)
    second = FileRateLimiter(tmp_path / "budget.sqlite", **SETTINGS)
    assert first.reserve() == 0.0
    assert second.reserve() == pytest.approx(INTERVAL, abs=0.05)
    second.pause(10)
    assert first.reserve() > 9.9


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing" / "budget.sqlite", "cannot open the budget file"),
        (lambda tmp: tmp, "cannot open the budget file"),  # a directory
        (lambda tmp: _not_a_database(tmp), "cannot use"),
        (lambda tmp: _another_database(tmp), "cannot use"),
    ],
)
def test_a_file_that_cannot_hold_a_budget_fails_at_construction(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message) as caught:
        FileRateLimiter(path, **SETTINGS)
    assert str(path) in str(caught.value)


def test_bad_path_and_timeout_are_named() -> None:
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, not int"):
        FileRateLimiter(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        FileRateLimiter("/tmp/x.sqlite", timeout=0)


def _not_a_database(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("not a database, but long enough to look like a header " * 20)
    return path


def _another_database(tmp: Path) -> Path:
    path = tmp / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE budget (name TEXT)")
    return path
