"""RPM/TPM emulation: the sliding window and the 429s it produces."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer
from resilient_llm.testing._ratelimit import RateLimited, SlidingWindowLimiter

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
