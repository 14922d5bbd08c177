"""Retries over real sockets (SPEC §4): what is retried, what is not, Retry-After, notes, hooks."""

from __future__ import annotations

import logging
import time
from typing import Any

import openai
import pytest

from resilient_llm import (
    AsyncResilientClient,
    CallDetails,
    ResilientClient,
    RetryDetails,
    RetryPolicy,
    Timeouts,
)
from resilient_llm.testing import Fault, MockOpenAIServer

from .conftest import TEST_KEY

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def make_sync(server: MockOpenAIServer, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("deadline", 20)
    return ResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def make_async(server: MockOpenAIServer, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("deadline", 20)
    return AsyncResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


RETRYABLE = [
    pytest.param(Fault.status(429, retry_after=0), id="429"),
    pytest.param(Fault.status(408), id="408"),
    pytest.param(Fault.status(409), id="409"),
    pytest.param(Fault.status(500), id="500"),
    pytest.param(Fault.status(502), id="502"),
    pytest.param(Fault.status(503), id="503"),
    pytest.param(Fault.status(504), id="504"),
    pytest.param(Fault.status(400, should_retry=True), id="400-x-should-retry-true"),
    pytest.param(Fault.reset(), id="reset"),
    pytest.param(Fault.reset(after_bytes=20), id="reset-mid-response"),
]

NOT_RETRYABLE = [
    pytest.param(Fault.status(400), openai.BadRequestError, id="400"),
    pytest.param(Fault.status(401), openai.AuthenticationError, id="401"),
    pytest.param(Fault.status(403), openai.PermissionDeniedError, id="403"),
    pytest.param(Fault.status(404), openai.NotFoundError, id="404"),
    pytest.param(Fault.status(422), openai.UnprocessableEntityError, id="422"),
    pytest.param(
        Fault.status(503, should_retry=False), openai.InternalServerError, id="503-no-retry"
    ),
    pytest.param(Fault.insufficient_quota(), openai.RateLimitError, id="insufficient_quota"),
]


@pytest.mark.parametrize("fault", RETRYABLE)
def test_sync_retryable_fault_is_retried_then_succeeds(
    server: MockOpenAIServer, fault: Fault
) -> None:
    server.script(fault)
    with make_sync(server) as client:
        vector = client.embed("hello", dimensions=8)
        assert len(vector) == 8
        assert client.stats.retries == 1
        assert client.stats.succeeded == 1
    assert server.stats.total_requests == 2


@pytest.mark.anyio
@pytest.mark.parametrize("fault", RETRYABLE)
async def test_async_retryable_fault_is_retried_then_succeeds(
    server: MockOpenAIServer, fault: Fault
) -> None:
    server.script(fault)
    async with make_async(server) as client:
        vector = await client.embed("hello", dimensions=8)
        assert len(vector) == 8
        assert client.stats.retries == 1
    assert server.stats.total_requests == 2


@pytest.mark.parametrize(("fault", "error_type"), NOT_RETRYABLE)
def test_sync_non_retryable_fault_raises_at_once_with_openai_type(
    server: MockOpenAIServer, fault: Fault, error_type: type[Exception]
) -> None:
    server.script(fault)
    with make_sync(server) as client, pytest.raises(error_type):
        client.embed("hello")
    assert server.stats.total_requests == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "error_type"), NOT_RETRYABLE)
async def test_async_non_retryable_fault_raises_at_once_with_openai_type(
    server: MockOpenAIServer, fault: Fault, error_type: type[Exception]
) -> None:
    server.script(fault)
    async with make_async(server) as client:
        with pytest.raises(error_type):
            await client.embed("hello")
    assert server.stats.total_requests == 1


def test_insufficient_quota_says_why_it_was_not_retried(server: MockOpenAIServer) -> None:
    server.script(Fault.insufficient_quota())
    with make_sync(server) as client, pytest.raises(openai.RateLimitError) as caught:
        client.complete("hi")
    assert any("insufficient_quota" in note for note in caught.value.__notes__)


def test_per_attempt_timeout_is_retried(server: MockOpenAIServer) -> None:
    server.script(Fault.hang())
    with make_sync(server, timeouts=Timeouts(connect=1, read=0.3, write=1, pool=1)) as client:
        started = time.monotonic()
        assert client.complete("hello")
        assert 0.3 <= time.monotonic() - started < 2.0
        assert client.stats.timeouts == 1


def test_retry_after_is_waited_for(server: MockOpenAIServer) -> None:
    server.script(Fault.status(429, retry_after=1))
    with make_sync(server) as client:
        started = time.monotonic()
        client.embed("hello")
        waited = time.monotonic() - started
    assert 1.0 <= waited < 1.8
    first, second = server.requests[:2]
    assert second.started - first.started >= 1.0


@pytest.mark.anyio
async def test_async_retry_after_ms_is_waited_for(server: MockOpenAIServer) -> None:
    server.script(Fault.status(429, retry_after_ms=400))
    async with make_async(server) as client:
        started = time.monotonic()
        await client.embed("hello")
        assert 0.4 <= time.monotonic() - started < 1.2


def test_exhausted_attempts_raise_last_error_with_note_and_log(
    server: MockOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(*[Fault.status(503)] * 4)
    caplog.set_level(logging.WARNING, logger="resilient_llm")
    with make_sync(server) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat([{"role": "user", "content": "hi"}])
    notes = "\n".join(caught.value.__notes__)
    assert "4 attempts" in notes
    assert notes.count("InternalServerError 503") == 4
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3
    assert all(r.levelno == logging.WARNING for r in retries)
    assert server.stats.total_requests == 4


def test_retry_after_above_max_retry_after_fails_fast(server: MockOpenAIServer) -> None:
    server.script(Fault.status(429, retry_after=30))
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_retry_after=5)
    with make_sync(server, retry=policy) as client, pytest.raises(openai.RateLimitError) as caught:
        client.embed("hello")
    assert "max_retry_after" in caught.value.__notes__[0]
    assert server.stats.total_requests == 1


def test_hooks_receive_records_and_a_raising_hook_is_harmless(
    server: MockOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    retries: list[RetryDetails] = []
    calls: list[CallDetails] = []

    def on_call(details: CallDetails) -> None:
        calls.append(details)
        raise RuntimeError("hook bug")

    server.script(Fault.status(500), Fault.status(429, retry_after=0))
    with make_sync(server, on_retry=retries.append, on_call=on_call) as client:
        client.embed("hello")
    assert [(r.attempt, r.status, r.error_type) for r in retries] == [
        (1, 500, "InternalServerError"),
        (2, 429, "RateLimitError"),
    ]
    assert all(r.operation == "embeddings" and r.elapsed >= 0 for r in retries)
    assert len(calls) == 1
    assert calls[0].ok
    assert calls[0].attempts == 3
    assert "hook" in caplog.text
    assert "hook bug" in caplog.text


@pytest.mark.anyio
async def test_async_hooks_may_be_coroutines(server: MockOpenAIServer) -> None:
    seen: list[Any] = []

    async def on_retry(details: RetryDetails) -> None:
        seen.append(details)

    server.script(Fault.status(502))
    async with make_async(server, on_retry=on_retry, on_call=seen.append) as client:
        await client.complete("hi")
    assert isinstance(seen[0], RetryDetails)
    assert isinstance(seen[1], CallDetails)


def test_official_client_has_its_own_retries_off(server: MockOpenAIServer) -> None:
    with make_sync(server) as client:
        assert client.openai.max_retries == 0
        server.script(Fault.status(500))
        with pytest.raises(openai.InternalServerError):
            client.openai.models.list()  # the raw official client: no hidden retries
        assert server.stats.total_requests == 1


def test_call_gives_any_endpoint_the_same_retries(server: MockOpenAIServer) -> None:
    server.script(Fault.status(500), Fault.reset())
    with make_sync(server) as client:
        models = client.call(lambda c: c.models.list())
        assert [m.id for m in models.data]
        assert client.stats.retries == 2


@pytest.mark.anyio
async def test_async_call_and_openai_property(server: MockOpenAIServer) -> None:
    server.script(Fault.status(503))

    async def list_models(c: openai.AsyncOpenAI, prefix: str) -> list[str]:
        page = await c.models.list()
        return [m.id for m in page.data if m.id.startswith(prefix)]

    async with make_async(server) as client:
        assert client.openai.max_retries == 0
        ids = await client.call(list_models, "text-embedding", deadline=5)
        assert ids
    assert server.stats.total_requests == 2
