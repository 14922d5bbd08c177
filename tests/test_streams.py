"""Streams over the loopback server (SPEC §9): sync, asyncio and trio.

What the caller got is checked against what the server recorded: how many requests it saw, and
whether it saw the client close the connection.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import anyio
import pytest
from openai.types.chat import ChatCompletionChunk

from resilient_llm import (
    AsyncResilientClient,
    CallDetails,
    DeadlineExceeded,
    ResilientClient,
    RetryPolicy,
    StreamInterrupted,
)
from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text

from .conftest import TEST_KEY

PROMPT = "one two three four five six seven"
ANSWER = chat_reply_text(PROMPT)
MESSAGES = [{"role": "user", "content": PROMPT}]
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
CHAT_PATH = "/v1/chat/completions"


def sync_client(server: MockOpenAIServer, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", FAST)
    return ResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def async_client(server: MockOpenAIServer, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", FAST)
    return AsyncResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def settled(server: MockOpenAIServer, timeout: float = 3.0) -> None:
    """Wait until the server has finished every request (it notices a close asynchronously)."""
    deadline = time.monotonic() + timeout
    while server.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the text -------------------------------------------------------------------------------------


def test_streamed_deltas_are_the_answer(server: MockOpenAIServer) -> None:
    with sync_client(server) as client:
        assert client.complete(PROMPT) == ANSWER
        assert "".join(client.complete(PROMPT, stream=True)) == ANSWER
        with client.chat(MESSAGES, stream=True) as stream:
            chunks = list(stream)
        assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == ANSWER
        assert (stream.chunks, stream.text) == (len(chunks), ANSWER)
    assert server.stats.requests_by_path[CHAT_PATH] == 3


@pytest.mark.anyio
async def test_async_streamed_deltas_are_the_answer(server: MockOpenAIServer) -> None:
    async with async_client(server) as client:
        text = ""
        async with await client.complete(PROMPT, stream=True) as stream:
            async for delta in stream:
                assert isinstance(delta, str)
                text += delta
        assert text == ANSWER
        chunks = [chunk async for chunk in await client.chat(MESSAGES, stream=True)]
        assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert server.stats.requests_by_path[CHAT_PATH] == 2


# -- retried until the first chunk ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503), Fault.status(429, retry_after=0), Fault.reset(after_chunks=0)],
    ids=["503", "429", "reset-before-first"],
)
def test_a_failure_before_the_first_chunk_is_retried(
    server: MockOpenAIServer, fault: Fault
) -> None:
    server.script(fault, path=CHAT_PATH)
    with sync_client(server) as client:
        assert "".join(client.complete(PROMPT, stream=True)) == ANSWER
    assert server.stats.requests_by_path[CHAT_PATH] == 2


@pytest.mark.anyio
async def test_async_failure_before_the_first_chunk_is_retried(server: MockOpenAIServer) -> None:
    server.script(Fault.status(503), Fault.reset(after_chunks=0), path=CHAT_PATH)
    async with async_client(server) as client:
        stream = await client.complete(PROMPT, stream=True)
        assert "".join([delta async for delta in stream]) == ANSWER
    assert server.stats.requests_by_path[CHAT_PATH] == 3


# -- after the first chunk: never retried silently ------------------------------------------------


def test_a_reset_mid_stream_raises_once_with_the_count(server: MockOpenAIServer) -> None:
    server.script(Fault.reset(after_chunks=3), path=CHAT_PATH)
    with sync_client(server) as client:
        stream = client.complete(PROMPT, stream=True)
        received: list[str] = []
        with pytest.raises(StreamInterrupted) as caught:
            received.extend(stream)
    # A role chunk, then one word per chunk: 3 chunks delivered, 2 of them text.
    assert caught.value.chunks == 3
    assert caught.value.text == "".join(received)
    assert ANSWER.startswith(caught.value.text)
    assert caught.value.__cause__ is not None
    assert server.stats.requests_by_path[CHAT_PATH] == 1


@pytest.mark.anyio
async def test_async_reset_mid_stream_raises_once_with_the_count(server: MockOpenAIServer) -> None:
    server.script(Fault.reset(after_chunks=3), path=CHAT_PATH)
    async with async_client(server) as client:
        stream = await client.chat(MESSAGES, stream=True)
        with pytest.raises(StreamInterrupted) as caught:
            async for _chunk in stream:
                pass
    assert caught.value.chunks == 3
    assert server.stats.requests_by_path[CHAT_PATH] == 1


# -- the deadline bounds the whole stream ---------------------------------------------------------


def test_slow_chunks_end_at_the_deadline_and_the_connection_is_closed(
    server: MockOpenAIServer,
) -> None:
    server.script(Fault.slow_chunks(0.3), path=CHAT_PATH)
    with sync_client(server) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            for _delta in client.complete(PROMPT, stream=True, deadline=1.0):
                pass
        elapsed = time.monotonic() - started
    assert elapsed <= 1.5
    assert caught.value.chunks is not None
    assert 0 < caught.value.chunks < 12
    assert ANSWER.startswith(caught.value.text or "")
    settled(server)
    assert [record.client_closed for record in server.requests] == [True]


@pytest.mark.anyio
async def test_async_slow_chunks_end_at_the_deadline(server: MockOpenAIServer) -> None:
    server.script(Fault.slow_chunks(0.3), path=CHAT_PATH)
    async with async_client(server) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            async for _delta in await client.complete(PROMPT, stream=True, deadline=1.0):
                pass
        elapsed = time.monotonic() - started
    assert elapsed <= 1.5
    assert caught.value.chunks is not None
    assert caught.value.chunks > 0
    await anyio.to_thread.run_sync(settled, server)
    assert [record.client_closed for record in server.requests] == [True]


def test_the_consumers_own_time_counts_against_the_deadline(server: MockOpenAIServer) -> None:
    with sync_client(server) as client:
        stream = client.complete(PROMPT, stream=True, deadline=1.0)
        next(stream)
        time.sleep(1.1)
        with pytest.raises(DeadlineExceeded):
            next(stream)


def test_a_stall_longer_than_the_read_timeout_interrupts(server: MockOpenAIServer) -> None:
    server.script(Fault.stall(after_chunks=2), path=CHAT_PATH)
    with sync_client(server, timeouts=0.5) as client:
        started = time.monotonic()
        with pytest.raises(StreamInterrupted) as caught:
            for _chunk in client.chat(MESSAGES, stream=True, deadline=10):
                pass
    assert time.monotonic() - started < 2.0
    assert caught.value.chunks == 2
    assert server.stats.requests_by_path[CHAT_PATH] == 1


# -- closing --------------------------------------------------------------------------------------


def test_breaking_out_twenty_times_leaves_nothing_open() -> None:
    with MockOpenAIServer(stream_chunk_interval=0.05) as server, sync_client(server) as client:
        list(client.complete(PROMPT, stream=True))  # the thread's client and its pool
        before = open_fds()
        for _ in range(20):
            for index, _chunk in enumerate(client.chat(MESSAGES, stream=True)):
                if index == 1:
                    break
        gc.collect()
        settled(server)
        assert open_fds() <= before + 1
        assert server.stats.open_connections <= 1
        closed = [record.client_closed for record in server.requests[1:]]
    assert closed == [True] * 20


def test_a_dropped_stream_closes_its_connection() -> None:
    with MockOpenAIServer(stream_chunk_interval=0.05) as server, sync_client(server) as client:
        stream = client.chat(MESSAGES, stream=True)
        next(stream)
        del stream
        gc.collect()
        settled(server)
        assert [record.client_closed for record in server.requests] == [True]


@pytest.mark.anyio
async def test_async_breaking_out_leaves_nothing_open() -> None:
    with MockOpenAIServer(stream_chunk_interval=0.05) as server:
        async with async_client(server) as client:
            for _ in range(10):
                async with await client.chat(MESSAGES, stream=True) as stream:
                    async for _chunk in stream:
                        break
            await anyio.to_thread.run_sync(settled, server)
            closed = [record.client_closed for record in server.requests]
    assert closed == [True] * 10


# -- streams through call() -----------------------------------------------------------------------


def test_a_responses_stream_through_call_gets_the_same_guarantees(
    server: MockOpenAIServer,
) -> None:
    server.script(Fault.status(503), path="/v1/responses")
    with sync_client(server) as client:
        stream = client.call(
            lambda official: official.responses.create(
                model="gpt-4o-mini", input=PROMPT, stream=True
            )
        )
        events = list(stream)
    assert events[-1].type == "response.completed"
    assert stream.text == ANSWER
    assert server.stats.requests_by_path["/v1/responses"] == 2


def test_a_responses_stream_through_call_is_bounded_by_the_deadline(
    server: MockOpenAIServer,
) -> None:
    server.script(Fault.slow_chunks(0.3), path="/v1/responses")
    with sync_client(server) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            for _event in client.call(
                lambda official: official.responses.create(
                    model="gpt-4o-mini", input=PROMPT, stream=True
                ),
                deadline=1.0,
            ):
                pass
    assert time.monotonic() - started <= 1.5


@pytest.mark.anyio
async def test_async_responses_stream_through_call(server: MockOpenAIServer) -> None:
    async def create(official: Any) -> Any:
        return await official.responses.create(model="gpt-4o-mini", input=PROMPT, stream=True)

    async with async_client(server) as client:
        stream = await client.call(create)
        events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    assert stream.text == ANSWER


# -- hooks ----------------------------------------------------------------------------------------


def test_one_call_record_per_stream_when_it_ends(server: MockOpenAIServer) -> None:
    records: list[CallDetails] = []
    server.script(Fault.reset(after_chunks=2), path=CHAT_PATH)
    with sync_client(server, on_call=records.append) as client:
        assert records == []
        stream = client.complete(PROMPT, stream=True)
        assert records == []  # not before the stream ends
        list(client.complete(PROMPT, stream=True))
        with pytest.raises(StreamInterrupted):
            list(stream)
    assert [(r.ok, r.error_type, r.chunks) for r in records] == [
        (True, None, len(ANSWER.split()) + 2),
        (False, "StreamInterrupted", 2),
    ]
