"""RPM/TPM emulation: the sliding window and the 429s it produces."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer
from resilient_llm.testing._ratelimit import RateLimited, SlidingWindowLimiter
from resilient_llm.testing._stats import max_in_window

ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]
EMBED = "text-embedding-3-small"


@pytest.mark.parametrize(
    ("rpm", "tpm", "calls", "expected"),
    [
        # (time, tokens) per call -> None (admitted) or (kind, retry_after)
        (2, None, [(0, 1), (10, 1), (20, 1)], [None, None, ("requests", 40.0)]),
        (2, None, [(0, 1), (10, 1), (60, 1)], [None, None, None]),  # the first one expired
        (
            2,
            None,
            [(0, 1), (10, 1), (20, 1), (30, 1)],
            [None, None, ("requests", 40.0), ("requests", 30.0)],
        ),
        (None, 100, [(0, 60), (5, 30), (6, 20)], [None, None, ("tokens", 54.0)]),
        (None, 100, [(0, 60), (5, 30), (6, 80)], [None, None, ("tokens", 59.0)]),
        (None, 100, [(0, 60), (1, 101)], [None, ("tokens", None)]),  # can never fit
        (3, 100, [(0, 90), (1, 5), (2, 10)], [None, None, ("tokens", 58.0)]),
    ],
)
def test_sliding_window_limiter(
    rpm: int | None,
    tpm: int | None,
    calls: list[tuple[float, int]],
    expected: list[tuple[str, float | None] | None],
) -> None:
    limiter = SlidingWindowLimiter(rpm, tpm, window=60.0)
    results = [limiter.acquire(now, tokens) for now, tokens in calls]
    simplified = [None if r is None else (r.kind, r.retry_after) for r in results]
    assert simplified == expected


def test_refused_requests_consume_nothing() -> None:
    limiter = SlidingWindowLimiter(rpm=1, tpm=None, window=1.0)
    assert limiter.acquire(0.0, 1) is None
    for t in (0.1, 0.2, 0.3):
        refusal = limiter.acquire(t, 1)
        assert isinstance(refusal, RateLimited)
        assert refusal.retry_after == pytest.approx(1.0 - t)
    assert limiter.acquire(1.0, 1) is None  # exactly when the server said


def test_rpm_sixth_request_gets_429_with_retry_after(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(rpm=5)
    with make_client(server) as client:
        began = time.monotonic()
        for _ in range(5):
            client.embeddings.create(input="x", model=EMBED, dimensions=2)
        with pytest.raises(openai.RateLimitError) as info:
            client.embeddings.create(input="x", model=EMBED, dimensions=2)
        elapsed = time.monotonic() - began
    error = info.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    headers = error.response.headers
    # The window frees up 60 s after the first request.
    expected_ms = (60.0 - elapsed) * 1000
    assert expected_ms - 50 <= int(headers["retry-after-ms"]) <= 60_000
    assert headers["retry-after"] == "60"  # whole seconds, rounded up
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "Limit 5, Used 5, Requested 1" in error.message
    assert server.stats.responses_by_status == {200: 5, 429: 1}


def test_waiting_retry_after_ms_is_enough(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(rpm=2, rate_window=0.5)
    with make_client(server) as client:
        client.embeddings.create(input="x", model=EMBED, dimensions=2)
        client.embeddings.create(input="x", model=EMBED, dimensions=2)
        with pytest.raises(openai.RateLimitError) as info:
            client.embeddings.create(input="x", model=EMBED, dimensions=2)
        wait_ms = int(info.value.response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 500
        assert info.value.response.headers["retry-after"] == "1"
        time.sleep(wait_ms / 1000)
        assert client.embeddings.create(input="x", model=EMBED, dimensions=2).data


def test_tpm_counts_prompt_tokens(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(tpm=30)
    text = "x" * 80  # 20 tokens
    with make_client(server) as client:
        client.embeddings.create(input=text, model=EMBED, dimensions=2)
        with pytest.raises(openai.RateLimitError) as info:
            client.embeddings.create(input=text, model=EMBED, dimensions=2)
        assert info.value.type == "tokens"
        assert info.value.response.headers["x-ratelimit-limit-tokens"] == "30"
        assert float(info.value.response.headers["retry-after-ms"]) > 59_000
        # A small request still fits in the budget left.
        client.embeddings.create(input="x" * 40, model=EMBED, dimensions=2)
        with pytest.raises(openai.RateLimitError) as too_big:
            client.embeddings.create(input="x" * 400, model=EMBED, dimensions=2)
        assert "retry-after" not in too_big.value.response.headers
    assert server.stats.prompt_tokens == 30


def test_models_endpoint_is_not_rate_limited(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(rpm=1)
    with make_client(server) as client:
        for _ in range(3):
            assert client.models.list().data
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_invalid_rate_limit_options() -> None:
    with pytest.raises(ValueError, match="rpm"):
        MockOpenAIServer(rpm=0)
    with pytest.raises(ValueError, match="rate_window"):
        MockOpenAIServer(rpm=1, rate_window=0)


# ------------------------------------------------------------------------------ window evidence


@pytest.mark.parametrize(
    ("events", "seconds", "expected"),
    [
        ([], 1.0, 0),
        ([(0.0, 1)], 1.0, 1),
        ([(0.0, 1), (0.5, 1), (0.99, 1), (1.0, 1)], 1.0, 3),  # 1.0 starts a new window
        ([(3.0, 1), (0.0, 1), (2.5, 1), (2.9, 1)], 1.0, 3),  # any order
        ([(0.0, 5), (0.9, 7), (1.5, 1), (1.6, 10)], 1.0, 18),  # weights: 0.9 + 1.5 + 1.6
        ([(0.0, 5), (0.0, 5), (10.0, 1)], 0.001, 10),  # simultaneous arrivals share a window
    ],
)
def test_max_in_window(events: list[tuple[float, int]], seconds: float, expected: int) -> None:
    assert max_in_window(events, seconds) == expected


def test_max_in_window_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="seconds must be > 0"):
        max_in_window([(0.0, 1)], 0)


def test_request_log_timestamps_and_window_counts(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(rpm=3, rate_window=60)
    before = time.time()
    with make_client(server) as client:
        for _ in range(5):
            with contextlib.suppress(openai.RateLimitError):
                client.embeddings.create(input="abcd" * 10, model=EMBED)  # 10 tokens
        time.sleep(1.0)
        with contextlib.suppress(openai.RateLimitError):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
    after = time.time()
    records = server.requests
    assert all(before <= r.wall_time <= after for r in records)
    assert [r.started for r in records] == sorted(r.started for r in records)
    assert all(
        abs((r.wall_time - records[0].wall_time) - (r.started - records[0].started)) < 0.05
        for r in records
    )
    assert [r.status for r in records] == [200, 200, 200, 429, 429, 429]
    assert [r.prompt_tokens for r in records[:5]] == [10] * 5  # asked for, admitted or not
    assert server.max_requests_in_window(60) == 6
    assert server.max_requests_in_window(60, status=200) == 3  # never more than the budget
    assert server.max_requests_in_window(0.9, path="/v1/embeddings") == 5
    assert server.max_requests_in_window(0.9) == 5  # the chat request came 1 s later
    assert server.max_requests_in_window(60, path="chat/completions") == 1
    assert server.max_tokens_in_window(60, path="/v1/embeddings") == 50
    assert server.max_tokens_in_window(60, path="/v1/embeddings", status=200) == 30
