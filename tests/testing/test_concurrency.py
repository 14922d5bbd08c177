"""Counters under concurrency, keep-alive, and hundreds of simultaneous connections."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import anyio
import h11
import openai
import pytest

from resilient_llm.testing import MockOpenAIServer

ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]
AsyncClientFactory = Callable[..., openai.AsyncOpenAI]
EMBED = "text-embedding-3-small"
BODY = json.dumps({"input": "hi", "model": EMBED, "dimensions": 4}).encode()


def test_peak_in_flight_with_threads(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    # Long enough that every request arrives before the first is answered, on a shared CPU too.
    server = mock_openai_factory(latency=1.0)
    n = 12
    clients = [make_client(server) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def work(client: openai.OpenAI) -> None:
        try:
            barrier.wait()
            client.embeddings.create(input="x", model=EMBED, dimensions=2)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert errors == []
    stats = server.stats.snapshot()
    assert stats.peak_in_flight == n
    assert stats.in_flight == 0
    assert stats.total_requests == n
    assert stats.connections_opened == n
    assert stats.responses_by_status == {200: n}


@pytest.mark.anyio
async def test_peak_in_flight_with_async_client(
    make_async_client: AsyncClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(latency=0.5)
    async with make_async_client(server) as client:

        async def one() -> None:
            await client.embeddings.create(input="x", model=EMBED, dimensions=2)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
        # A second wave reuses the pooled keep-alive connections.
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
    assert server.stats.peak_in_flight == 20
    assert server.stats.total_requests == 40
    assert server.stats.connections_opened == 20


def test_keep_alive_reuses_one_connection(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    for _ in range(10):
        client.embeddings.create(input="x", model=EMBED, dimensions=2)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    client.models.list()
    # (Not a streamed chat: the sync official client closes a stream's connection at [DONE]
    # instead of reading the body's last chunk, so the next request needs a new one.)
    assert mock_openai.stats.connections_opened == 1
    assert mock_openai.stats.open_connections == 1
    assert mock_openai.stats.total_requests == 12
    client.close()
    deadline = time.monotonic() + 2
    while mock_openai.stats.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mock_openai.stats.open_connections == 0


def test_counters_are_exact_under_load(
    make_client: ClientFactory, mock_openai: MockOpenAIServer
) -> None:
    threads_n, per_thread = 8, 40
    stop_reading = threading.Event()
    read_errors: list[BaseException] = []

    def reader() -> None:
        # Reading while the server writes must never see a dict change size mid-iteration.
        try:
            while not stop_reading.is_set():
                stats = mock_openai.stats
                sum(stats.requests_by_path.values())
                dict(stats.responses_by_status)
                list(mock_openai.requests)
                time.sleep(0.001)  # a tight loop would hog the GIL and starve the server
        except BaseException as exc:
            read_errors.append(exc)

    def writer(i: int) -> None:
        with make_client(mock_openai) as c:
            for j in range(per_thread):
                if j % 2:
                    c.embeddings.create(input=f"{i}-{j}", model=EMBED, dimensions=2)
                else:
                    c.models.retrieve("m")

    watcher = threading.Thread(target=reader)
    watcher.start()
    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop_reading.set()
    watcher.join()

    total = threads_n * per_thread
    stats = mock_openai.stats.snapshot()
    assert read_errors == []
    assert stats.total_requests == total
    assert stats.responses_by_status == {200: total}
    assert stats.requests_by_path == {"/v1/embeddings": total // 2, "/v1/models/m": total // 2}
    assert stats.connections_opened == threads_n
    assert stats.in_flight == 0
    assert len(mock_openai.requests) == total

    mock_openai.reset_stats()
    assert mock_openai.stats.total_requests == 0
    assert mock_openai.requests == []


async def _two_requests_on_one_connection(port: int, statuses: list[int]) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        conn = h11.Connection(h11.CLIENT)
        for _ in range(2):
            request = h11.Request(
                method="POST",
                target="/v1/embeddings",
                headers=[
                    ("host", "127.0.0.1"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(BODY))),
                ],
            )
            data = conn.send(request) or b""
            data += conn.send(h11.Data(data=BODY)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send(data)
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
            statuses.append(status)
            conn.start_next_cycle()


@pytest.mark.anyio
async def test_holds_256_concurrent_keep_alive_connections(
    mock_openai_factory: ServerFactory,
) -> None:
    # 256 connects and parses share one GIL with the server: all must land within the latency.
    server = mock_openai_factory(latency=1.5)
    statuses: list[int] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(256):
                tg.start_soon(_two_requests_on_one_connection, server.port, statuses)
    assert statuses == [200] * 512
    stats = server.stats.snapshot()
    assert stats.connections_opened == 256
    # One request in flight per connection at most, so 256 in flight means 256 open at once.
    assert stats.peak_in_flight == 256
    assert stats.total_requests == 512
