"""Outage: the server goes away mid-batch and comes back on the same port.

A background thread stops the server once a fifth of the batch is done (every connection is
dropped, new ones are refused), keeps it down for the outage, then starts it again on the same
port. Two budgets per request:

- patient (deadline longer than the outage): requests caught by the outage are retried until
  the server is back, and every item succeeds;
- impatient (deadline shorter than the outage): requests caught by the outage fail, each within
  its deadline, as recorded failures; the batch carries on once the server is back.

Either way: no hang (the batch ends within the outage plus one deadline of the restart), and
every index is accounted for exactly once. Full run: 3 s outage on sync, asyncio and trio;
reduced: 1 s, patient on sync and impatient on asyncio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from resilient_llm import ItemFailure, RetryPolicy
from resilient_llm.testing import MockOpenAIServer, embedding_vector

from ._support import (
    async_client,
    background,
    count_tasks,
    settle_tasks,
    sync_client,
)

DIMS = 8
TEXTS = [f"outage document {i}" for i in range(240)]
BATCH_SIZE = 2
CONCURRENCY = 4
LATENCY = 0.03
SLACK = 0.5
# Reconnect quickly while the server is down; give up only at the deadline.
POLICY = RetryPolicy(max_attempts=100, base_delay=0.05, max_delay=0.25)
OUTAGE_FAILURES = {"DeadlineExceeded", "APIConnectionError", "APITimeoutError"}


@dataclass
class Outage:
    """Stops the server when told to, for ``seconds``; records when."""

    server: MockOpenAIServer
    seconds: float
    trigger: threading.Event = field(default_factory=threading.Event)
    stopped_at: float = 0.0
    restarted_at: float = 0.0

    def run(self) -> None:
        if not self.trigger.wait(30):
            raise AssertionError("the batch never reached the point of the outage")
        self.stopped_at = time.monotonic()
        self.server.stop()
        time.sleep(self.seconds)
        self.server.start()  # the same port: SO_REUSEADDR
        self.restarted_at = time.monotonic()


@dataclass
class Timeline:
    """What the caller got, when; counted without asserting, so a broken run still reports."""

    started: float = field(default_factory=time.monotonic)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    wrong: int = 0
    failures: list[tuple[float, ItemFailure]] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)

    def add(self, index: int, outcome: Any, outage: Outage) -> None:
        if index in self.seen:
            self.duplicates += 1
            return
        self.seen.add(index)
        now = time.monotonic()
        if isinstance(outcome, ItemFailure):
            self.failures.append((now, outcome))
        elif same_vector(outcome, TEXTS[index]):
            self.successes.append(now)
        else:
            self.wrong += 1
        if len(self.seen) >= len(TEXTS) // 5:
            outage.trigger.set()


def same_vector(vector: Any, text: str) -> bool:
    expected = embedding_vector(text, DIMS)
    return (
        isinstance(vector, list)
        and len(vector) == DIMS
        and all(abs(a - b) < 1e-6 for a, b in zip(vector, expected, strict=True))
    )


def _measure(
    timeline: Timeline, outage: Outage, ended: float, server: MockOpenAIServer
) -> dict[str, Any]:
    """The figures of a run, from the caller's timeline and the server's counters."""
    restarted = outage.restarted_at or ended
    return {
        "items": len(TEXTS),
        "succeeded": len(timeline.successes),
        "wrong": timeline.wrong,
        "failed": len(timeline.failures),
        "lost": len(TEXTS) - len(timeline.seen),
        "duplicates": timeline.duplicates,
        "failures_by_type": _by_type(timeline.failures),
        "server_requests": server.stats.total_requests,
        "succeeded_after_restart": sum(1 for when in timeline.successes if when > restarted),
        "last_failure_after_stop": max(
            (when - outage.stopped_at for when, _ in timeline.failures), default=None
        ),
        "batch_end_after_restart": ended - restarted,
    }


def _check(
    timeline: Timeline, outage: Outage, deadline: float, patient: bool, ended: float
) -> None:
    assert timeline.seen == set(range(len(TEXTS))), "indices missing"
    assert not timeline.duplicates, f"{timeline.duplicates} indices reported twice"
    assert not timeline.wrong, f"{timeline.wrong} vectors differ from the server's"
    assert outage.restarted_at, "the outage never happened"
    # No hang: once the server is back, whatever the outage caught is over within one deadline.
    assert ended <= outage.restarted_at + deadline + 5.0, "the batch hung after the restart"
    for when, failure in timeline.failures:
        assert failure.error_type in OUTAGE_FAILURES, failure
        assert outage.stopped_at - 0.1 <= when <= outage.restarted_at + deadline + SLACK, (
            f"item {failure.index} failed at +{when - outage.stopped_at:.2f} s after the stop"
        )
    after_restart = sum(1 for when in timeline.successes if when > outage.restarted_at)
    assert after_restart > 0, "the batch did not resume after the restart"
    if patient:
        assert not timeline.failures, [f.message for _, f in timeline.failures[:3]]
    else:
        assert timeline.failures, "nothing was caught by the outage"


def _by_type(failures: list[tuple[float, ItemFailure]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, failure in failures:
        counts[failure.error_type] = counts.get(failure.error_type, 0) + 1
    return counts


def _plan(size: str, patient: bool, full: bool) -> tuple[float, float]:
    """(outage seconds, request deadline) of a case."""
    if size == "reduced" and full:
        pytest.skip("the full run has the 3 s outage")
    outage = 3.0 if size == "full" else 1.0
    return outage, (outage + 6.0 if patient else outage / 2)


SLOW = pytest.mark.slow
SYNC_CASES = [
    pytest.param("reduced", True, id="reduced-patient"),
    pytest.param("full", True, id="full-patient", marks=SLOW),
    pytest.param("full", False, id="full-impatient", marks=SLOW),
]
ASYNC_CASES = [
    pytest.param("asyncio", "reduced", False, id="asyncio-reduced-impatient"),
    *(
        pytest.param(backend, "full", patient, id=f"{backend}-full-{label}", marks=SLOW)
        for backend in ("asyncio", "trio")
        for patient, label in ((True, "patient"), (False, "impatient"))
    ),
]


@pytest.mark.parametrize(("size", "patient"), SYNC_CASES)
def test_outage_sync(size: str, patient: bool, full: bool, figures: Callable[..., None]) -> None:
    seconds, deadline = _plan(size, patient, full)
    with MockOpenAIServer(latency=LATENCY) as server:
        outage = Outage(server, seconds)
        timeline = Timeline()
        with (
            background(outage.run, "outage"),
            sync_client(server.base_url, retry=POLICY, deadline=deadline) as client,
        ):
            stream = client.iter_embed_batch(
                TEXTS, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, dimensions=DIMS
            )
            with stream:
                for index, outcome in stream:
                    timeline.add(index, outcome, outage)
            ended = time.monotonic()
        data = _measure(timeline, outage, ended, server)
    figures(
        section="outage", runner="sync", patient=patient, outage=seconds, deadline=deadline, **data
    )
    _check(timeline, outage, deadline, patient, ended)


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "size", "patient"), ASYNC_CASES)
async def test_outage_async(
    size: str, patient: bool, full: bool, figures: Callable[..., None], anyio_backend: str
) -> None:
    seconds, deadline = _plan(size, patient, full)
    tasks_before = count_tasks()
    with MockOpenAIServer(latency=LATENCY) as server:
        outage = Outage(server, seconds)
        timeline = Timeline()
        # The outage thread blocks in server.stop() / start(): a thread, not a task, on purpose.
        with background(outage.run, "outage"):
            async with async_client(server.base_url, retry=POLICY, deadline=deadline) as client:
                stream = client.iter_embed_batch(
                    TEXTS, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, dimensions=DIMS
                )
                async with stream:
                    async for index, outcome in stream:
                        timeline.add(index, outcome, outage)
                ended = time.monotonic()
        data = _measure(timeline, outage, ended, server)
    figures(
        section="outage",
        runner=anyio_backend,
        patient=patient,
        outage=seconds,
        deadline=deadline,
        **data,
    )
    assert await settle_tasks(tasks_before) <= tasks_before, "tasks left behind"
    _check(timeline, outage, deadline, patient, ended)
