"""Soak: thousands of embedding requests through a server that fails 20% of them at random.

The server (a child process, so that only the client is measured) draws a fault for 20% of the
requests among 429, 500, 503, connection reset and 50 ms of extra latency. One text per request
(``batch_size=1``), 16 requests in flight at most. Checks:

- nothing lost: every index is reported exactly once, with the right vector or a failure record
  (counted by the test from what the caller got, never from the library's own counters);
- at least 99.9% of the items succeed after retries, with the vector the server computed;
- no growth in threads, sockets or tasks from start to end, and bounded use in between.

Full run (``slow``): 20,000 requests on sync and on asyncio (5,000 on trio, which shares the
async code path, to keep the full run within ten minutes on two shared cores), with the default
``max_attempts=5``. Reduced (CI): 1,000 requests on sync and asyncio, with ``max_attempts=6`` so
that a 1-in-1,000 budget cannot fail on bad luck (a 5-attempt item fails with probability
0.16**5 ~ 1e-4; 6 attempts make it ~2e-5).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from resilient_llm import ItemFailure, RetryPolicy
from resilient_llm.testing import embedding_vector

from ._support import (
    RemoteServer,
    async_client,
    count_tasks,
    resources,
    settle_resources,
    settle_resources_async,
    settle_tasks,
    sync_client,
)

CONCURRENCY = 16
FAIL_RATE = 0.2
DIMS = 8
RETRYABLE = {"RateLimitError", "InternalServerError", "APIConnectionError", "APITimeoutError"}
SUCCESS_GOAL = 0.999  # the report reads "missed" below this

SIZES = {
    "reduced": (1_000, RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.1)),
    "full": (20_000, RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.1)),
}
FULL_ON_TRIO = 5_000
PARAMS = [
    pytest.param("reduced", id="reduced"),
    pytest.param("full", id="full", marks=[pytest.mark.slow, pytest.mark.timeout(900)]),
]


def text(index: int) -> str:
    return f"soak document {index}"


def same_vector(vector: Any, source: str, dims: int) -> bool:
    expected = embedding_vector(source, dims)
    return (
        isinstance(vector, list)
        and len(vector) == dims
        and all(abs(a - b) < 1e-6 for a, b in zip(vector, expected, strict=True))
    )


class Tally:
    """What the caller got back, counted without trusting the library: each index's outcome,
    each vector compared with the server's own, resources sampled on the way.

    Nothing here asserts while the batch runs, so that a run that loses or corrupts items
    still reaches the report with its figures; `check` asserts at the end.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = bytearray(total)
        self.duplicates = 0
        self.out_of_range = 0
        self.correct = 0
        self.wrong = 0
        self.failures: list[ItemFailure] = []
        self.peak_threads = 0
        self.peak_sockets = 0
        self.peak_tasks = 0
        self.count = 0

    def add(self, index: int, outcome: Any, tasks: Callable[[], int] | None = None) -> None:
        self.count += 1
        if not 0 <= index < self.total:
            self.out_of_range += 1
            return
        if self.seen[index]:
            self.duplicates += 1
            return
        self.seen[index] = 1
        if isinstance(outcome, ItemFailure):
            self.failures.append(outcome)
        elif same_vector(outcome, text(index), DIMS):
            self.correct += 1
        else:
            self.wrong += 1
        if self.count % 250 == 0:
            now = resources()
            self.peak_threads = max(self.peak_threads, now.threads + now.runtime_threads)
            self.peak_sockets = max(self.peak_sockets, now.sockets)
            if tasks is not None:
                self.peak_tasks = max(self.peak_tasks, tasks())

    @property
    def lost(self) -> int:
        """Inputs the caller never got an outcome for."""
        return self.total - sum(self.seen)

    def check(self) -> None:
        assert self.lost == 0, f"{self.lost} items never reported"
        assert self.duplicates == 0, f"{self.duplicates} items reported twice"
        assert self.out_of_range == 0, f"{self.out_of_range} outcomes for indices never sent"
        assert self.wrong == 0, f"{self.wrong} vectors differ from the server's"


def _skip_reduced_in_full_run(size: str, full: bool) -> None:
    if size == "reduced" and full:
        pytest.skip("the full run soaks at full size")


def _report(
    figures: Callable[..., None],
    runner: str,
    size: str,
    tally: Tally,
    server: RemoteServer,
    policy: RetryPolicy,
    elapsed: float,
    before: Any,
    after: Any,
    tasks: tuple[int, int, int] | None,
) -> None:
    """Figures from the caller's tally and the server's counters only (one text a request, so
    every request the server saw beyond one per item was a retry)."""
    by_type: dict[str, int] = {}
    for failure in tally.failures:
        by_type[failure.error_type] = by_type.get(failure.error_type, 0) + 1
    server_requests = int(server.stats.get("total_requests", 0))
    figures(
        section="soak",
        runner=runner,
        size=size,
        items=tally.total,
        succeeded=tally.correct,
        wrong=tally.wrong,
        failed=len(tally.failures),
        failures_by_type=by_type,
        lost=tally.lost,
        duplicates=tally.duplicates + tally.out_of_range,
        success_rate=tally.correct / tally.total,
        retries=max(server_requests - tally.total, 0),
        server_requests=server_requests,
        faults_injected=server.stats.get("faults_injected"),
        peak_in_flight=server.stats.get("peak_in_flight"),
        max_attempts=policy.max_attempts,
        elapsed=elapsed,
        threads=(before.threads, tally.peak_threads, after.threads),
        sockets=(before.sockets, tally.peak_sockets, after.sockets),
        tasks=tasks,
    )


def _check(tally: Tally, server: RemoteServer, before: Any, after: Any) -> None:
    tally.check()
    assert tally.correct / tally.total >= SUCCESS_GOAL, (
        f"only {tally.correct} of {tally.total} succeeded"
    )
    assert {f.error_type for f in tally.failures} <= RETRYABLE
    assert server.stats["peak_in_flight"] <= CONCURRENCY
    # Every item was sent at least once; faults were really injected at about the rate asked.
    assert server.stats["total_requests"] >= tally.total
    injected = sum(server.stats["faults_injected"].values())
    assert injected >= 0.1 * tally.total
    # Bounded while running, back to the baseline after close.
    assert tally.peak_sockets <= before.sockets + 3 * CONCURRENCY
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"


@pytest.mark.parametrize("size", PARAMS)
def test_soak_sync(size: str, full: bool, figures: Callable[..., None]) -> None:
    _skip_reduced_in_full_run(size, full)
    total, policy = SIZES[size]
    with RemoteServer(fail_rate=FAIL_RATE, faults="soak", seed=7) as server:
        before = resources()
        tally = Tally(total)
        started = time.monotonic()
        with sync_client(server.base_url, retry=policy, deadline=30) as client:
            stream = client.iter_embed_batch(
                (text(i) for i in range(total)),
                batch_size=1,
                max_concurrency=CONCURRENCY,
                dimensions=DIMS,
            )
            error = None
            try:
                with stream:
                    for index, outcome in stream:
                        tally.add(index, outcome)
            except Exception as exc:  # a broken batch still reports what it lost
                error = exc
        elapsed = time.monotonic() - started
        after = settle_resources(before)
    _report(figures, "sync", size, tally, server, policy, elapsed, before, after, None)
    if error is not None:
        raise error
    _check(tally, server, before, after)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param("trio", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("size", PARAMS)
async def test_soak_async(
    size: str, full: bool, figures: Callable[..., None], anyio_backend: str
) -> None:
    _skip_reduced_in_full_run(size, full)
    total, policy = SIZES[size]
    if size == "full" and anyio_backend == "trio":
        total = FULL_ON_TRIO
    with RemoteServer(fail_rate=FAIL_RATE, faults="soak", seed=7) as server:
        before = resources()
        tasks_before = count_tasks()
        tally = Tally(total)
        started = time.monotonic()
        async with async_client(server.base_url, retry=policy, deadline=30) as client:
            stream = client.iter_embed_batch(
                (text(i) for i in range(total)),
                batch_size=1,
                max_concurrency=CONCURRENCY,
                dimensions=DIMS,
            )
            error = None
            try:
                async with stream:
                    async for index, outcome in stream:
                        tally.add(index, outcome, count_tasks)
            except Exception as exc:  # a broken batch still reports what it lost
                error = exc
        elapsed = time.monotonic() - started
        tasks_after = await settle_tasks(tasks_before)
        after = await settle_resources_async(before)
    tasks = (tasks_before, tally.peak_tasks, tasks_after)
    _report(
        figures,
        anyio_backend,
        size,
        tally,
        server,
        policy,
        elapsed,
        before,
        after,
        tasks,
    )
    if error is not None:
        raise error
    _check(tally, server, before, after)
    assert tasks_after <= tasks_before, f"tasks: {tasks_before} before, {tasks_after} after"
