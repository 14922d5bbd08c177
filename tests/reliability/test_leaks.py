"""Leaks: sockets, threads and tasks come back to their baseline after the ways clients end.

Every test of this suite already runs under the leak guard of ``conftest.py`` (threads and
sockets before == after). These scenarios stress the endings that usually leak: many clients in
a row, a stream abandoned while requests hang, an async batch cancelled from outside, threads
that end without closing anything, one async client shared by successive event loops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer

from ._support import (
    HAS_PROC,
    async_client,
    count_tasks,
    resources,
    settle_resources,
    settle_resources_async,
    settle_tasks,
    sync_client,
)

TEXTS = [f"leak document {i}" for i in range(20)]
ROUNDS = 6
MIXED = (Fault.status(429, retry_after=0), Fault.status(500), Fault.reset())


def test_many_sync_clients_in_a_row(server: MockOpenAIServer, figures: Callable[..., None]) -> None:
    before = resources()
    peak = before.sockets
    for round_ in range(ROUNDS):
        server.script(*MIXED)
        with sync_client(server.base_url) as client:
            assert client.embed(f"round {round_}")
            assert client.complete("hello")
            assert client.embed_batch(TEXTS, batch_size=2, max_concurrency=4).ok
            peak = max(peak, resources().sockets)
    after = settle_resources(before)
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case=f"{ROUNDS} sync clients in a row, with retries",
        before=before.describe(),
        after=after.describe(),
        peak_sockets=peak,
    )


@pytest.mark.anyio
async def test_many_async_clients_in_a_row(
    server: MockOpenAIServer, figures: Callable[..., None], anyio_backend: str
) -> None:
    before = resources()
    tasks_before = count_tasks()
    for round_ in range(ROUNDS):
        server.script(*MIXED)
        async with async_client(server.base_url) as client:
            assert await client.embed(f"round {round_}")
            assert await client.complete("hello")
            assert (await client.embed_batch(TEXTS, batch_size=2, max_concurrency=4)).ok
    tasks_after = await settle_tasks(tasks_before)
    after = await settle_resources_async(before)
    assert tasks_after <= tasks_before
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case=f"{ROUNDS} {anyio_backend} clients in a row",
        before=f"{before.describe()}, {tasks_before} tasks",
        after=f"{after.describe()}, {tasks_after} tasks",
    )


def test_abandoning_a_stream_while_requests_hang(
    server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    server.script(Fault.hang(), Fault.hang(), Fault.hang(), path="/v1/embeddings")
    before = resources()
    with sync_client(server.base_url, deadline=60) as client:
        stream = client.iter_embed_batch(TEXTS, batch_size=1, max_concurrency=4)
        with stream:
            next(iter(stream))  # one answer; three requests still hanging
            started = time.monotonic()
        left_after = time.monotonic() - started
    after = settle_resources(before)
    assert left_after < 1.0, f"leaving the stream took {left_after:.2f} s"
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case="sync stream left early, 3 requests hanging",
        before=before.describe(),
        after=after.describe(),
        note=f"stream closed in {left_after:.2f} s",
    )


@pytest.mark.anyio
async def test_abandoning_an_async_stream_while_requests_hang(
    server: MockOpenAIServer, figures: Callable[..., None], anyio_backend: str
) -> None:
    server.script(Fault.hang(), Fault.hang(), Fault.hang(), path="/v1/embeddings")
    before = resources()
    tasks_before = count_tasks()
    async with async_client(server.base_url, deadline=60) as client:
        async with client.iter_embed_batch(TEXTS, batch_size=1, max_concurrency=4) as stream:
            async for _ in stream:
                break
            started = time.monotonic()
        left_after = time.monotonic() - started
    tasks_after = await settle_tasks(tasks_before)
    after = await settle_resources_async(before)
    assert left_after < 1.0
    assert tasks_after <= tasks_before, f"{tasks_after - tasks_before} stray tasks"
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case=f"{anyio_backend} stream left early, 3 requests hanging",
        before=f"{before.describe()}, {tasks_before} tasks",
        after=f"{after.describe()}, {tasks_after} tasks",
        note=f"stream closed in {left_after:.2f} s",
    )


@pytest.mark.anyio
async def test_cancelling_an_async_batch_from_outside(
    server: MockOpenAIServer, figures: Callable[..., None], anyio_backend: str
) -> None:
    server.script(*[Fault.hang()] * 4, path="/v1/embeddings")
    before = resources()
    tasks_before = count_tasks()
    async with async_client(server.base_url, deadline=60) as client:
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await client.embed_batch(TEXTS, batch_size=1, max_concurrency=4)
        stopped_after = time.monotonic() - started
        assert scope.cancelled_caught
    tasks_after = await settle_tasks(tasks_before)
    after = await settle_resources_async(before)
    assert stopped_after < 0.3 + 0.5
    assert tasks_after <= tasks_before, f"{tasks_after - tasks_before} stray tasks"
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case=f"{anyio_backend} batch cancelled after 0.3 s",
        before=f"{before.describe()}, {tasks_before} tasks",
        after=f"{after.describe()}, {tasks_after} tasks",
        note=f"stopped in {stopped_after:.2f} s",
    )


@pytest.mark.skipif(not HAS_PROC, reason="counts sockets through /proc")
def test_threads_that_end_release_their_connections(
    server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    before = resources()
    with sync_client(server.base_url) as client:
        workers = [
            threading.Thread(target=client.embed, args=(f"thread {i}",), name=f"user-{i}")
            for i in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        # No close() yet: each thread's official client went with its thread.
        after_threads = settle_resources(before)
        assert not after_threads.exceeds(before), after_threads.describe()
    figures(
        section="leak_scenario",
        case="8 threads share a client and end (no close)",
        before=before.describe(),
        after=after_threads.describe(),
    )


def test_one_async_client_across_successive_event_loops(
    server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    """A module-level client used by ``asyncio.run`` and ``trio.run`` in turn, never closed."""
    before = resources()
    client = async_client(server.base_url)

    async def main() -> None:
        server.script(*MIXED)
        assert await client.embed("from this loop")
        assert (await client.embed_batch(TEXTS[:6], batch_size=1)).ok

    for backend in ("asyncio", "trio", "asyncio", "trio"):
        anyio.run(main, backend=backend)
    after = settle_resources(before)
    assert not after.exceeds(before), f"before {before.describe()}, after {after.describe()}"
    figures(
        section="leak_scenario",
        case="one async client, 4 event loops in turn, no aclose",
        before=before.describe(),
        after=after.describe(),
    )
