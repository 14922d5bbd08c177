"""The wall-clock deadline holds against hangs, trickling servers and long Retry-After (SPEC §3)."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from resilient_llm import DeadlineExceeded, ResilientClient, RetryPolicy
from resilient_llm.testing import Fault, MockOpenAIServer

from .test_retries import make_async, make_sync

SLACK = 0.5  # the deadline must be honoured within half a second


def test_sync_hang_is_cut_at_the_deadline(server: MockOpenAIServer) -> None:
    server.script(*[Fault.hang()] * 5)
    with make_sync(server, deadline=2) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            client.embed("hello")
        elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 2 + SLACK
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert "embeddings" in str(caught.value)


def test_sync_drip_is_cut_at_the_deadline_without_extra_threads(server: MockOpenAIServer) -> None:
    # One byte a second: every byte resets the read timeout, so only the deadline can stop it.
    server.script(*[Fault.drip(interval=1.0)] * 5)
    threads_before = threading.active_count()
    peak_threads = threads_before
    with make_sync(server, deadline=3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.complete("hello")
        elapsed = time.monotonic() - started
        peak_threads = max(peak_threads, threading.active_count())
    assert 2.9 <= elapsed < 3.6
    assert peak_threads == threads_before


@pytest.mark.anyio
async def test_async_hang_is_cut_at_the_deadline(server: MockOpenAIServer) -> None:
    server.script(*[Fault.hang()] * 5)
    async with make_async(server, deadline=2) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.embed("hello")
        elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 2 + SLACK


@pytest.mark.anyio
async def test_async_drip_is_cut_at_the_deadline(server: MockOpenAIServer) -> None:
    server.script(*[Fault.drip(interval=1.0)] * 5)
    async with make_async(server, deadline=3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.complete("hello")
        elapsed = time.monotonic() - started
    assert 2.9 <= elapsed < 3.6


def test_retry_after_longer_than_the_budget_left_fails_at_once(server: MockOpenAIServer) -> None:
    server.script(Fault.status(429, retry_after=10))
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_retry_after=60)
    with make_sync(server, deadline=5, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            client.embed("hello")
        assert time.monotonic() - started < 1.0  # not the 10 s asked, nor the deadline
    assert isinstance(caught.value.__cause__, openai.RateLimitError)
    # The message itself says why, in figures rounded for people (issue 19).
    message = str(caught.value)
    assert "the server asked to wait 10 s" in message
    assert "of the deadline were left" in message
    assert server.stats.total_requests == 1


@pytest.mark.anyio
async def test_async_retry_after_longer_than_the_budget_left_fails_at_once(
    server: MockOpenAIServer,
) -> None:
    server.script(Fault.status(503, retry_after=10))
    async with make_async(server, deadline=3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.embed("hello")
        assert time.monotonic() - started < 1.0  # not the 10 s asked, nor the deadline


def test_per_call_deadline_overrides_the_client_default(server: MockOpenAIServer) -> None:
    server.script(Fault.hang())
    with make_sync(server, deadline=60) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.embed("hello", deadline=1)
        assert time.monotonic() - started < 1 + SLACK


def test_backoff_sleep_that_would_cross_the_deadline_is_not_slept(
    server: MockOpenAIServer,
) -> None:
    server.script(*[Fault.status(500)] * 5)
    policy = RetryPolicy(max_attempts=5, base_delay=10, max_delay=10)
    with make_sync(server, deadline=1, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            client.embed("hello")
        elapsed = time.monotonic() - started
    # Full jitter may pick a short sleep that fits; then the next attempt happens. Either way the
    # call gives up within the budget, never after sleeping past it.
    assert elapsed < 1 + SLACK
    assert isinstance(caught.value.__cause__, openai.InternalServerError)


def test_a_proxy_from_the_environment_is_used_and_the_deadline_holds_through_it(
    server: MockOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loopback server answers as the proxy (it reads the absolute-form target); the origin
    # name does not resolve, so only a request sent through the proxy can succeed.
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = ResilientClient(
        api_key="sk-test-proxy-0123", base_url="http://api.proxied.invalid/v1", deadline=1.0
    )
    with proxied:
        assert proxied.embed("through the proxy", dimensions=4)
        server.script(Fault.drip(0.2))
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            proxied.embed("dripped through the proxy", dimensions=4)
        assert time.monotonic() - started < 1.5
    finished = time.monotonic() + 5
    while server.stats.in_flight and time.monotonic() < finished:  # the drip notices the close
        time.sleep(0.02)
    assert [record.path for record in server.requests] == ["/v1/embeddings"] * 2
