"""Threads, event loops and forks: every booking gets a slot of its own, none blocks a loop."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_llm import FileRateLimiter, LocalRateLimiter
from resilient_llm._limits import apause, areserve

from ._backends import AtClock, FileAt, LocalAt, RedisAt

# requests_per_minute=600 with window=3: C = 30, slack 0.15 s, one request every 0.105 s.
SETTINGS = {"requests_per_minute": 600, "window": 3}
INTERVAL = (3 + 0.15) / 30


def expected_waits(n: int) -> list[float]:
    """Bookings made at one frozen instant: one at once, then one interval apart each."""
    return [i * INTERVAL for i in range(n)]


class SlowBudget:
    """Yields the GIL between reading the state and writing it back: unguarded state tears."""

    def __init__(self, budget: Any) -> None:
        self._budget = budget

    def check_tokens(self, tokens: int) -> int:
        return int(self._budget.check_tokens(tokens))

    def book(self, *args: Any) -> Any:
        time.sleep(0.0001)
        return self._budget.book(*args)


@pytest.fixture(params=["local", "file", "redis"])
def frozen(request: pytest.FixtureRequest, tmp_path: Path) -> AtClock:
    if request.param == "local":
        local = LocalAt(**SETTINGS)
        local.limiter._budget = SlowBudget(local.limiter._budget)  # type: ignore[assignment]
        return local
    if request.param == "file":
        return FileAt(tmp_path / "budget.sqlite", **SETTINGS)
    return RedisAt(
        request.getfixturevalue("redis_url"), request.getfixturevalue("redis_key"), **SETTINGS
    )


def test_threads_each_get_a_slot_of_their_own(frozen: AtClock) -> None:
    threads, each = 8, 25
    with ThreadPoolExecutor(threads) as pool:
        waits = list(pool.map(lambda _: frozen.reserve_at(0.0), range(threads * each)))
    # (clock readings near today's wall clock keep about 1e-7 s of precision)
    assert sorted(waits) == pytest.approx(expected_waits(threads * each), abs=1e-5)


# ---------------------------------------------------------------- async callers


class SyncOnly:
    """A third-party limiter with only the protocol's two blocking methods."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def reserve(self, tokens: int = 0) -> float:
        self.threads.append(threading.get_ident())
        return 0.25 + tokens

    def pause(self, seconds: float) -> None:
        self.threads.append(threading.get_ident())


@pytest.mark.anyio
async def test_a_blocking_limiter_runs_in_a_worker_thread() -> None:
    limiter = SyncOnly()
    assert await areserve(limiter, 2) == 2.25
    await apause(limiter, 1.0)
    assert len(limiter.threads) == 2
    assert threading.get_ident() not in limiter.threads


@pytest.mark.anyio
async def test_the_local_limiter_books_on_the_loop_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the local limiter never blocks: no worker thread needed")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
    limiter = LocalRateLimiter(**SETTINGS)
    began = time.monotonic()
    assert await areserve(limiter) == 0.0
    second = await areserve(limiter)
    gap = time.monotonic() - began  # the second booking waits what is left of the interval
    assert INTERVAL - gap - 0.001 <= second <= INTERVAL + 0.001
    await apause(limiter, 5)
    assert await areserve(limiter) > 4.9


@pytest.mark.anyio
async def test_the_file_limiter_books_in_a_worker_thread(tmp_path: Path) -> None:
    limiter = FileRateLimiter(tmp_path / "budget.sqlite", **SETTINGS)
    seen: list[int] = []
    book = limiter.reserve

    def spy(tokens: int = 0) -> float:
        seen.append(threading.get_ident())
        return book(tokens)

    limiter.reserve = spy  # type: ignore[method-assign]
    assert await areserve(limiter) == 0.0
    assert await areserve(limiter) == pytest.approx(INTERVAL, abs=0.05)
    assert len(seen) == 2
    assert threading.get_ident() not in seen
    await apause(limiter, 5)
    assert await areserve(limiter) > 4.9


@pytest.mark.anyio
async def test_many_tasks_are_spaced_in_booking_order() -> None:
    limiter = LocalRateLimiter(requests_per_minute=6000, window=3)  # 100 a second
    interval = (3 + 0.15) / 300
    sent: list[float] = []

    async def one() -> None:
        await anyio.sleep(await areserve(limiter))
        sent.append(time.monotonic())

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one)
    # The n-th booking's slot is n intervals after the first; a sleep may end late, never early
    # (up to the loop's timer rounding).
    for n, moment in enumerate(sorted(sent)):
        assert moment - started >= n * interval - 0.002, n
    assert sorted(sent)[-1] - started < 19 * interval + 1.0  # and they were not held back


# ---------------------------------------------------------------- fork


def _fork_and_run(child: Callable[[], None]) -> int:
    """Fork; run `child` in the child (exit 0 if it returns, 1 if it raises); return its code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal_alarm = __import__("signal")
            signal_alarm.alarm(10)  # a deadlocked child must not hang the suite
            child()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("kind", ["local", "file"])
def test_a_child_forked_while_a_thread_books_can_book(kind: str, tmp_path: Path) -> None:
    limiter: Any = (
        LocalRateLimiter(**SETTINGS)
        if kind == "local"
        else FileRateLimiter(tmp_path / "budget.sqlite", **SETTINGS)
    )
    limiter.reserve()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with limiter._lock:  # the state a fork can catch a booking thread in
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    try:
        code = _fork_and_run(lambda: [limiter.reserve() for _ in range(3)] and None)
    finally:
        release.set()
        thread.join()
    assert code == 0
    limiter.reserve()  # and the parent's own connection still works


def test_a_forked_child_shares_the_file_budget(tmp_path: Path) -> None:
    at = FileAt(tmp_path / "budget.sqlite", **SETTINGS)
    first = [at.reserve_at(0.0) for _ in range(3)]
    code = _fork_and_run(lambda: [at.reserve_at(0.0) for _ in range(4)] and None)
    assert code == 0
    later = [at.reserve_at(0.0) for _ in range(3)]
    # The child's four bookings sit between the parent's: slots 3..6 are taken.
    assert first + later == pytest.approx([i * INTERVAL for i in (0, 1, 2, 7, 8, 9)], abs=1e-5)
