"""`/v1/responses` and faults in streamed answers (SPEC §9), as the official client sees them."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import anyio
import openai
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text

CHAT = "gpt-4o-mini"
PROMPT = "one two three four five six seven"
ANSWER = chat_reply_text(PROMPT)
WORDS = len(ANSWER.split())
# Streamed events per answer: chat sends a role chunk, one chunk per word, a finish chunk and
# [DONE]; responses sends created, in_progress, item added, part added, one delta per word,
# text done, part done, item done and completed.
CHAT_EVENTS = WORDS + 3
RESPONSE_EVENTS = WORDS + 8
# The HTTP package the installed openai runs on (httpx for openai 2, httpx2 for openai 3).
_HTTP = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
# openai 3 wraps transport errors met mid-stream; openai 2's sync stream lets them through.
BROKEN = (openai.APIConnectionError, _HTTP.TransportError)
ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]
AsyncClientFactory = Callable[..., openai.AsyncOpenAI]


def _settled(server: MockOpenAIServer, timeout: float = 3.0) -> None:
    """Wait until the server has finished every request (it notices a close asynchronously)."""
    deadline = time.monotonic() + timeout
    while server.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats.in_flight == 0


def _chat_stream(client: openai.OpenAI, **options: Any) -> Any:
    messages = [{"role": "user", "content": PROMPT}]
    return client.chat.completions.create(model=CHAT, messages=messages, stream=True, **options)  # type: ignore[arg-type]


def _responses_stream(client: openai.OpenAI, **options: Any) -> Any:
    return client.responses.create(model=CHAT, input=PROMPT, stream=True, **options)


def _text(events: list[Any]) -> str:
    parts = []
    for event in events:
        if getattr(event, "object", None) == "chat.completion.chunk":
            parts.extend(c.delta.content or "" for c in event.choices)
        elif getattr(event, "type", None) == "response.output_text.delta":
            parts.append(event.delta)
    return "".join(parts)


STREAMS = {
    "chat": (_chat_stream, "/v1/chat/completions", CHAT_EVENTS),
    "responses": (_responses_stream, "/v1/responses", RESPONSE_EVENTS),
}


@pytest.fixture(params=list(STREAMS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------------------ /v1/responses


def test_responses_non_streamed(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    response = client.responses.create(
        model=CHAT, input=[{"role": "user", "content": PROMPT}], instructions="Be brief."
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert (response.status, response.model, response.instructions) == (
        "completed",
        CHAT,
        "Be brief.",
    )
    assert response.output_text == ANSWER
    message = response.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.status == "completed"
    assert [part.type for part in message.content] == ["output_text"]
    assert response.usage is not None
    assert response.usage.output_tokens == WORDS
    assert response.usage.total_tokens == response.usage.input_tokens + WORDS
    record = mock_openai.requests[0]
    assert (record.path, record.status, record.n_inputs) == ("/v1/responses", 200, 1)
    assert record.prompt_tokens == response.usage.input_tokens == mock_openai.stats.prompt_tokens
    assert record.chunks_sent is None  # not streamed


def test_responses_input_forms_and_truncation(client: openai.OpenAI) -> None:
    parts = client.responses.create(
        model=CHAT,
        input=[
            {"role": "developer", "content": "ignored for the answer"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b"}]},
        ],
    )
    assert parts.output_text == "Summary: a b"
    cut = client.responses.create(model=CHAT, input=PROMPT, max_output_tokens=3)
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "Summary: one two"


@pytest.mark.parametrize(
    ("request_body", "error", "param"),
    [
        ({"model": CHAT}, openai.BadRequestError, "input"),
        ({"model": CHAT, "input": [42]}, openai.BadRequestError, "input[0]"),
        ({"model": CHAT, "input": "x", "max_output_tokens": 0}, openai.BadRequestError, None),
        ({"model": CHAT, "input": "a POISON b"}, openai.BadRequestError, "input"),
        ({"model": "unknown-model", "input": "x"}, openai.NotFoundError, None),
    ],
)
def test_responses_refusals(
    client: openai.OpenAI,
    request_body: dict[str, Any],
    error: type[openai.APIStatusError],
    param: str | None,
) -> None:
    with pytest.raises(error) as info:
        client.post("/responses", body=request_body, cast_to=dict)
    if param is not None:
        assert info.value.param == param


def test_responses_stream_events_in_order(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    with _responses_stream(client) as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * WORDS,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert _text(events) == ANSWER
    assert events[0].response.status == "in_progress"
    assert events[-1].response.output_text == ANSWER
    assert events[-1].response.usage.output_tokens == WORDS
    record = mock_openai.requests[0]
    assert (record.status, record.chunks_sent, record.client_closed) == (
        200,
        RESPONSE_EVENTS,
        False,
    )


def test_responses_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=CHAT, input=PROMPT) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == ANSWER
    assert final.status == "completed"


def test_a_truncated_stream_ends_with_response_incomplete(client: openai.OpenAI) -> None:
    # As OpenAI sends it; the SDK's `responses.stream()` helper only accepts
    # `response.completed` and raises on this one.
    with _responses_stream(client, max_output_tokens=4) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert _text(events) == "Summary: one two three"


@pytest.mark.anyio
async def test_async_responses_stream(
    make_async_client: AsyncClientFactory, mock_openai: MockOpenAIServer
) -> None:
    async with make_async_client(mock_openai) as client:
        stream = await client.responses.create(model=CHAT, input=PROMPT, stream=True)
        try:
            events = [event async for event in stream]
        finally:
            await stream.close()
    assert _text(events) == ANSWER


# ------------------------------------------------------------------------------ stream faults


@pytest.mark.parametrize("code", [429, 503])
def test_error_status_before_the_first_chunk(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, kind: str, code: int
) -> None:
    start, path, _ = STREAMS[kind]
    mock_openai.script(Fault.status(code, retry_after=0), path=path)
    with pytest.raises(openai.APIStatusError) as info:
        start(client)
    assert info.value.status_code == code
    with start(client) as stream:  # consumed: the next stream is whole
        assert _text(list(stream)) == ANSWER
    assert [r.status for r in mock_openai.requests] == [code, 200]


def test_slow_chunks_deliver_everything_late(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, kind: str
) -> None:
    start, path, events = STREAMS[kind]
    interval = 0.02
    mock_openai.script(Fault.slow_chunks(interval), path=path)
    began = time.perf_counter()
    with start(client) as stream:
        received = list(stream)
    elapsed = time.perf_counter() - began
    assert _text(received) == ANSWER
    assert elapsed >= events * interval
    record = mock_openai.requests[0]
    assert (record.status, record.chunks_sent, record.fault) == (200, events, "slow_chunks")
    assert record.duration >= events * interval * 0.9


@pytest.mark.parametrize("after", [0, 3])
def test_stall_after_k_chunks_then_the_read_timeout(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, kind: str, after: int
) -> None:
    start, path, _ = STREAMS[kind]
    mock_openai.script(Fault.stall(after_chunks=after), path=path)
    received: list[Any] = []
    timeouts = (openai.APITimeoutError, _HTTP.TimeoutException)
    with pytest.raises(timeouts), start(client, timeout=0.5) as stream:
        received.extend(stream)
    assert len(received) == after  # every chunk sent is one event parsed
    _settled(mock_openai)
    record = mock_openai.requests[0]
    assert (record.status, record.client_closed, record.chunks_sent) == (None, True, after)
    assert record.fault == "stall"
    assert mock_openai.stats.client_disconnects == 1


def test_stall_on_a_non_streamed_answer_withholds_the_body(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.stall(after_chunks=5))
    with pytest.raises(openai.APITimeoutError):
        client.embeddings.create(input="x", model="text-embedding-3-small", timeout=0.3)
    _settled(mock_openai)
    record = mock_openai.requests[0]
    assert (record.status, record.client_closed, record.chunks_sent) == (None, True, None)


@pytest.mark.parametrize("after", [0, 2])
def test_reset_after_k_chunks_breaks_the_stream(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, kind: str, after: int
) -> None:
    start, path, _ = STREAMS[kind]
    mock_openai.script(Fault.reset(after_chunks=after), path=path)
    received: list[Any] = []
    with pytest.raises(BROKEN), start(client) as stream:
        received.extend(stream)
    assert len(received) == after
    record = mock_openai.requests[0]
    assert (record.status, record.chunks_sent, record.client_closed) == (None, after, False)
    with start(client) as stream:  # the client reconnects
        assert _text(list(stream)) == ANSWER


@pytest.mark.parametrize("how", ["close", "break", "with"])
def test_server_sees_the_client_close_a_stream_early(
    make_client: ClientFactory, mock_openai_factory: ServerFactory, kind: str, how: str
) -> None:
    start, _, events = STREAMS[kind]
    server = mock_openai_factory(stream_chunk_interval=0.1)
    with make_client(server) as client:
        stream = start(client)
        if how == "close":
            next(iter(stream))
            next(iter(stream))
            stream.close()
        elif how == "break":
            for count, _event in enumerate(stream, 1):
                if count == 2:
                    break
            stream.close()
        else:
            with stream:
                next(iter(stream))
                next(iter(stream))
        _settled(server)
    assert server.stats.total_requests == 1
    record = server.requests[0]
    assert record.client_closed
    assert record.status is None
    assert record.chunks_sent is not None
    assert 2 <= record.chunks_sent < events
    assert server.stats.client_disconnects == 1


@pytest.mark.anyio
async def test_async_close_is_seen_by_the_server(
    make_async_client: AsyncClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(stream_chunk_interval=0.1)
    async with make_async_client(server) as client:
        stream = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        iterator = stream.__aiter__()
        await iterator.__anext__()
        await iterator.aclose()  # type: ignore[attr-defined]  # an async generator
        await stream.close()
        await anyio.to_thread.run_sync(_settled, server)
    record = server.requests[0]
    assert record.client_closed
    assert record.chunks_sent is not None
    assert 1 <= record.chunks_sent < CHAT_EVENTS


def test_a_stream_read_to_the_end_is_complete(
    make_client: ClientFactory, mock_openai_factory: ServerFactory, kind: str
) -> None:
    start, _, events = STREAMS[kind]
    server = mock_openai_factory(stream_chunk_interval=0.005)
    with make_client(server) as client, start(client) as stream:
        assert _text(list(stream)) == ANSWER
    record = server.requests[0]
    assert (record.status, record.client_closed, record.chunks_sent) == (200, False, events)
    assert server.stats.client_disconnects == 0


def test_fault_constructors_validate_chunk_counts() -> None:
    with pytest.raises(ValueError, match="after_chunks"):
        Fault.stall(after_chunks=-1)
    with pytest.raises(ValueError, match="after_chunks"):
        Fault.reset(after_chunks=-2)
    with pytest.raises(ValueError, match="interval"):
        Fault.slow_chunks(float("inf"))
    with pytest.raises(ValueError, match="stream_chunk_interval"):
        MockOpenAIServer(stream_chunk_interval=-1)
    assert [f.name for f in (Fault.stall(), Fault.slow_chunks(0), Fault.reset(after_chunks=1))] == [
        "stall",
        "slow_chunks",
        "reset",
    ]
