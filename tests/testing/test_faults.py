"""Every fault, as the raw official client (no retries) experiences it."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import importlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import openai
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer

EMBED = "text-embedding-3-small"
# The HTTP package the installed openai runs on (httpx for openai 2, httpx2 for openai 3).
_HTTP = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]
AsyncClientFactory = Callable[..., openai.AsyncOpenAI]


def _embed(client: openai.OpenAI, **kwargs: Any) -> object:
    return client.embeddings.create(input="hello", model=EMBED, dimensions=4, **kwargs)


def _raw_exchange(server: MockOpenAIServer, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(request)
    return sock


GET_MODEL = b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("fault", "error", "error_type", "error_code"),
    [
        (Fault.status(400), openai.BadRequestError, "invalid_request_error", None),
        (Fault.status(401), openai.AuthenticationError, "authentication_error", "invalid_api_key"),
        (Fault.status(403), openai.PermissionDeniedError, "permission_error", None),
        (Fault.status(404), openai.NotFoundError, "not_found_error", "model_not_found"),
        (Fault.status(409), openai.ConflictError, "conflict_error", None),
        (Fault.status(422), openai.UnprocessableEntityError, "invalid_request_error", None),
        (Fault.status(429), openai.RateLimitError, "requests", "rate_limit_exceeded"),
        (Fault.status(500), openai.InternalServerError, "server_error", None),
        (Fault.status(502), openai.InternalServerError, "server_error", None),
        (Fault.status(503), openai.InternalServerError, "server_error", None),
        (Fault.status(504), openai.InternalServerError, "server_error", None),
        (
            Fault.insufficient_quota(),
            openai.RateLimitError,
            "insufficient_quota",
            "insufficient_quota",
        ),
    ],
    ids=lambda v: v.name if isinstance(v, Fault) else None,
)
def test_status_faults_raise_the_matching_openai_error(
    client: openai.OpenAI,
    mock_openai: MockOpenAIServer,
    fault: Fault,
    error: type[openai.APIStatusError],
    error_type: str,
    error_code: str | None,
) -> None:
    mock_openai.script(fault)
    with pytest.raises(error) as info:
        _embed(client)
    assert info.value.status_code == fault.status_code
    assert info.value.type == error_type
    assert info.value.code == error_code
    body = info.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert mock_openai.stats.faults_injected == {fault.name: 1}
    assert mock_openai.requests[0].fault == fault.name
    assert mock_openai.requests[0].status == fault.status_code
    # Scripted faults are consumed: the next request is answered normally.
    assert _embed(client)


def test_status_fault_headers(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    when = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    mock_openai.script(
        Fault.status(429, retry_after=7),
        Fault.status(503, retry_after=0.5, retry_after_ms=250, should_retry=False),
        Fault.status(500, retry_after_date=when, should_retry=True),
        Fault.status(
            418, message="teapot", error_type="odd", error_code="brew", headers={"x-a": "b"}
        ),
    )
    with pytest.raises(openai.RateLimitError) as rate:
        _embed(client)
    assert rate.value.response.headers["retry-after"] == "7"
    assert "retry-after-ms" not in rate.value.response.headers
    with pytest.raises(openai.InternalServerError) as unavailable:
        _embed(client)
    headers = unavailable.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("0.5", "250")
    assert headers["x-should-retry"] == "false"
    with pytest.raises(openai.InternalServerError) as server_error:
        _embed(client)
    headers = server_error.value.response.headers
    assert headers["retry-after"] == "Thu, 02 Jan 2031 03:04:05 GMT"
    assert email.utils.parsedate_to_datetime(headers["retry-after"]) == when
    assert headers["x-should-retry"] == "true"
    with pytest.raises(openai.APIStatusError) as teapot:
        _embed(client)
    assert teapot.value.status_code == 418
    assert teapot.value.body == {"message": "teapot", "type": "odd", "param": None, "code": "brew"}
    assert teapot.value.response.headers["x-a"] == "b"


def test_fault_constructors_validate() -> None:
    with pytest.raises(ValueError, match="400-599"):
        Fault.status(200)
    with pytest.raises(ValueError, match="not both"):
        Fault.status(429, retry_after=1, retry_after_date=dt.datetime.now(dt.timezone.utc))
    with pytest.raises(ValueError, match="invalid header"):
        Fault.status(500, headers={"x-bad": "a\r\nb"})
    with pytest.raises(ValueError, match="latency"):
        Fault.latency(-1)
    with pytest.raises(ValueError, match="after_bytes"):
        Fault.reset(after_bytes=-1)
    assert Fault.status(500) == Fault.status(500)  # frozen values, usable in sets and params
    assert len({Fault.hang(), Fault.hang(), Fault.drip(0.1)}) == 2
    names = [f.name for f in (Fault.latency(1), Fault.hang(), Fault.drip(), Fault.reset())]
    assert names == ["latency", "hang", "drip", "reset"]
    assert (Fault.malformed_json().name, Fault.html().name) == ("malformed_json", "html")


def test_latency_fault_delays_then_answers(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.latency(0.3))
    began = time.perf_counter()
    assert _embed(client)
    assert time.perf_counter() - began >= 0.3
    assert mock_openai.requests[0].duration >= 0.3
    assert mock_openai.requests[0].status == 200


def test_server_wide_latency_applies_to_every_request(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(latency=(0.05, 0.1), seed=3)
    with make_client(server) as client:
        for _ in range(3):
            _embed(client)
    assert all(0.05 <= r.duration < 0.5 for r in server.requests)


def test_hang_outlasts_the_client_timeout(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.hang())
    began = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        _embed(client, timeout=0.5)
    assert 0.5 <= time.perf_counter() - began < 2.0
    assert mock_openai.stats.faults_injected == {"hang": 1}
    # The server notices that the client gave up and ends the request (no status sent).
    deadline = time.monotonic() + 2
    while mock_openai.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mock_openai.stats.in_flight == 0
    assert mock_openai.requests[0].status is None
    assert mock_openai.requests[0].client_closed
    assert mock_openai.stats.client_disconnects == 1
    assert mock_openai.stats.responses_by_status == {}


def test_drip_sends_one_byte_per_interval(mock_openai: MockOpenAIServer) -> None:
    interval = 0.05
    mock_openai.script(Fault.drip(interval))
    with _raw_exchange(mock_openai, GET_MODEL) as sock:
        began = last = time.perf_counter()
        received = b""
        sizes = []
        while len(received) < 12:
            chunk = sock.recv(12 - len(received))
            now = time.perf_counter()
            # One byte per interval: a reader that wakes late may find the bytes of the
            # intervals it slept through, never more.
            assert len(chunk) <= 1 + int((now - last) / interval), (len(chunk), now - last)
            sizes.append(len(chunk))
            received += chunk
            last = now
        elapsed = time.perf_counter() - began
    assert received == b"HTTP/1.1 200"
    assert sizes.count(1) >= 6, sizes  # bytes arrive one at a time
    assert elapsed >= 11 * interval * 0.9


def test_drip_keeps_the_client_read_timeout_from_firing(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    interval = 0.01
    mock_openai.script(Fault.drip(interval))
    began = time.perf_counter()
    # Every byte resets the read timeout, so a 0.5 s timeout never fires on a ~1.5 s response.
    raw = client.models.with_raw_response.retrieve("m", timeout=0.5)
    elapsed = time.perf_counter() - began
    model = raw.parse()
    assert model.id == "m"
    wire_bytes = len(raw.http_response.content) + 60  # body plus at least the status and headers
    assert elapsed >= wire_bytes * interval
    assert elapsed > 0.5 * 2  # well past the read timeout: only the trickle kept it alive
    assert mock_openai.stats.faults_injected == {"drip": 1}
    assert mock_openai.requests[0].duration >= wire_bytes * interval * 0.9


@pytest.mark.parametrize("after_bytes", [0, 20, 120])
def test_reset_is_a_connection_error(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, after_bytes: int
) -> None:
    mock_openai.script(Fault.reset(after_bytes=after_bytes))
    with pytest.raises(openai.APIConnectionError) as info:
        _embed(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert mock_openai.requests[0].status is None
    assert mock_openai.requests[0].fault == "reset"
    assert _embed(client)  # the client reconnects and the next request works


def test_reset_sends_a_tcp_rst_after_the_requested_bytes(mock_openai: MockOpenAIServer) -> None:
    mock_openai.script(Fault.reset(), Fault.reset(after_bytes=9))
    with _raw_exchange(mock_openai, GET_MODEL) as sock, pytest.raises(ConnectionResetError):
        sock.recv(100)
    with _raw_exchange(mock_openai, GET_MODEL) as sock:
        received = b""
        with pytest.raises(ConnectionResetError):  # noqa: PT012
            while True:
                chunk = sock.recv(100)
                assert chunk, "expected RST, got an orderly close"
                received += chunk
    assert received == b"HTTP/1.1 "


def test_reset_mid_stream_breaks_a_streaming_chat(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.reset(after_bytes=400))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "many words to stream back " * 4}],
        stream=True,
    )
    # openai 3 wraps a transport error met mid-stream; openai 2's sync stream lets it through.
    with pytest.raises((openai.APIConnectionError, _HTTP.TransportError)), stream:
        for _ in stream:
            pass


def test_malformed_json_fails_decoding_in_the_client(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.malformed_json())
    with pytest.raises(json.JSONDecodeError):
        _embed(client)
    mock_openai.script(Fault.malformed_json())
    raw = client.embeddings.with_raw_response.create(input="x", model=EMBED)
    assert raw.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.text)


@pytest.mark.parametrize("status", [200, 502])
def test_html_page_instead_of_json(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, status: int
) -> None:
    mock_openai.script(Fault.html(status))
    if status == 200:
        raw = client.embeddings.with_raw_response.create(input="x", model=EMBED)
        assert raw.headers["content-type"].startswith("text/html")
        assert raw.text.startswith("<!DOCTYPE html>")
    else:
        with pytest.raises(openai.InternalServerError) as info:
            _embed(client)
        assert info.value.response.headers["content-type"].startswith("text/html")
    assert mock_openai.stats.faults_injected == {"html": 1}


def test_path_queues_are_used_before_the_global_queue(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.status(500), Fault.status(502))
    mock_openai.script(Fault.status(429), path="/v1/embeddings")
    mock_openai.script(Fault.status(503), path="chat/completions")  # normalised to /v1/...
    assert mock_openai.pending_faults() == 4
    assert mock_openai.pending_faults("/v1/embeddings") == 1

    with pytest.raises(openai.RateLimitError):  # the embeddings queue first
        _embed(client)
    with pytest.raises(openai.InternalServerError) as first_global:  # then the global queue
        _embed(client)
    with pytest.raises(openai.InternalServerError) as chat_fault:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError) as second_global:
        client.models.list()
    assert [first_global.value.status_code, chat_fault.value.status_code] == [500, 503]
    assert second_global.value.status_code == 502
    assert mock_openai.pending_faults() == 0
    assert _embed(client)

    mock_openai.script(Fault.status(500), Fault.status(500), path="/v1/embeddings")
    mock_openai.clear_faults()
    assert _embed(client)
    assert mock_openai.stats.faults_injected == {
        "status_429": 1,
        "status_500": 1,
        "status_503": 1,
        "status_502": 1,
    }


def _fault_sequence(
    make_client: ClientFactory, server: MockOpenAIServer, n: int
) -> list[str | None]:
    with make_client(server) as client:
        for _ in range(n):
            with contextlib.suppress(openai.APIError):
                client.models.retrieve("m")
    return [r.fault for r in server.requests]


def test_random_faults_are_reproducible_with_a_seed(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    first = _fault_sequence(make_client, mock_openai_factory(fail_rate=0.5, seed=7), 30)
    second = _fault_sequence(make_client, mock_openai_factory(fail_rate=0.5, seed=7), 30)
    other = _fault_sequence(make_client, mock_openai_factory(fail_rate=0.5, seed=8), 30)
    assert first == second != other
    assert set(first) == {None, "status_429", "status_500", "status_503", "reset"}
    # Switching latency to a range must not shift the fault sequence.
    jittered = mock_openai_factory(fail_rate=0.5, seed=7, latency=(0.0, 0.001))
    assert _fault_sequence(make_client, jittered, 30) == first


def test_random_faults_use_the_given_list(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(fail_rate=1.0, random_faults=[Fault.status(502)])
    assert _fault_sequence(make_client, server, 5) == ["status_502"] * 5
    assert server.stats.responses_by_status == {502: 5}
    with pytest.raises(ValueError, match="fail_rate"):
        MockOpenAIServer(fail_rate=1.5)


def test_default_random_429_says_retry_after_zero(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(fail_rate=1.0, random_faults=[Fault.status(429, retry_after=0)])
    with (
        make_client(server) as client,
        pytest.raises(openai.RateLimitError) as info,
    ):
        _embed(client)
    assert info.value.response.headers["retry-after"] == "0"


@pytest.mark.anyio
async def test_faults_with_the_async_client(
    make_async_client: AsyncClientFactory, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.status(429, retry_after=1), Fault.reset(), Fault.hang(), Fault.hang())
    async with make_async_client(mock_openai) as client:
        with pytest.raises(openai.RateLimitError):
            await client.embeddings.create(input="x", model=EMBED)
        with pytest.raises(openai.APIConnectionError):
            await client.embeddings.create(input="x", model=EMBED)
        with pytest.raises(openai.APITimeoutError):
            await client.embeddings.create(input="x", model=EMBED, timeout=0.3)
        # A cancel scope gives up on a request just as a timeout does.
        with anyio.move_on_after(0.2) as scope:
            await client.embeddings.create(input="x", model=EMBED)
        assert scope.cancelled_caught
        result = await client.embeddings.create(input="x", model=EMBED, dimensions=2)
        assert len(result.data[0].embedding) == 2
    assert mock_openai.stats.faults_injected == {
        "status_429": 1,
        "reset": 1,
        "hang": 2,
    }
    assert mock_openai.pending_faults() == 0
