"""The bucket arithmetic, table-driven at frozen clock readings, identical in all three limiters."""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import FileRateLimiter, LocalRateLimiter, RateLimiter

from ._backends import AtClock, FileAt, LocalAt, RedisAt
from .conftest import require

# With requests_per_minute=60 and window=10 the window holds C = 10 requests; the slack s is
# 0.5 s (a twentieth of the window), so each request adds T = (10 + 0.5) / 10 = 1.05 s to the
# bucket, and an idle bucket lets one go at once: booking n of a burst waits n * 1.05 s.
# With tokens_per_minute=600 and window=10: C = 100 tokens, T = 0.105 s a token; a request
# goes once the tokens before it are paid for.
# Steps: ("reserve", clock, tokens, expected wait) or ("pause", clock, seconds, None).
TABLE: dict[str, tuple[dict[str, Any], list[tuple[str, float, float, float | None]]]] = {
    "idle: one request at once, then one every 1.05 s": (
        {"requests_per_minute": 60, "window": 10},
        [
            ("reserve", 0, 0, 0.0),
            ("reserve", 0, 0, 1.05),
            ("reserve", 0, 0, 2.1),
            ("reserve", 0, 0, 3.15),
            ("reserve", 3.15, 0, 1.05),  # a booking in debt waits behind the ones before it
            ("reserve", 30, 0, 0.0),  # idle again
            ("reserve", 30, 0, 1.05),
        ],
    ),
    "10.5 s never hold more than 10 requests": (
        {"requests_per_minute": 60, "window": 10},
        # Bookings 0..9 go at 0, 1.05, ..., 9.45; booking 10 at 10.5.
        [("reserve", 0, 0, n * 1.05) for n in range(11)],
    ),
    "tokens: a request goes once the tokens before it are paid for": (
        {"tokens_per_minute": 600, "window": 10},
        [
            ("reserve", 0, 5, 0.0),
            ("reserve", 0, 5, 0.525),  # 5 tokens * 0.105 s
            ("reserve", 0, 50, 1.05),  # goes after 10 tokens, its 50 delay the next one
            ("reserve", 0, 0, 6.195),  # no tokens: waits for the debt down to one token
            ("reserve", 20, 7, 0.0),
        ],
    ),
    "both budgets: the longer wait wins": (
        {"requests_per_minute": 60, "tokens_per_minute": 600, "window": 10},
        [
            ("reserve", 0, 8, 0.0),
            ("reserve", 0, 8, 1.05),  # requests: 1.05; tokens: 8 * 0.105 = 0.84
            ("reserve", 0, 30, 2.1),  # requests: 2.1; tokens: 1.68
            ("reserve", 0, 1, 4.83),  # requests: 3.15; tokens: 1.68 + 30 * 0.105
        ],
    ),
    "a pause holds every booking, then the bucket restarts empty": (
        {"requests_per_minute": 60, "window": 10},
        [
            ("reserve", 0, 0, 0.0),
            ("pause", 0, 3, None),
            ("reserve", 1, 0, 3.05),  # until 3, then one interval: 3 + 1.05 - 1
            ("pause", 1, 1, None),  # a shorter pause does not shorten the first one
            ("reserve", 1, 0, 4.1),
            ("reserve", 40, 0, 0.0),
        ],
    ),
    "a pause without budgets": (
        {},
        [
            ("reserve", 0, 0, 0.0),
            ("pause", 0, 2, None),
            ("reserve", 0.5, 100, 1.5),
            ("reserve", 2, 0, 0.0),
        ],
    ),
    "a clock that goes back refunds nothing": (
        {"requests_per_minute": 60, "window": 10},
        [
            ("reserve", 5, 0, 0.0),
            ("reserve", 5, 0, 1.05),
            ("reserve", 4, 0, 3.1),  # the booking for 7.1 s, seen from 4 s
        ],
    ),
    "a minute-long window: a one-second slack": (
        {"requests_per_minute": 600},
        # C = 600, s = 1 s: one request every 61/600 s.
        [("reserve", 0, 0, n * 61 / 600) for n in range(12)],
    ),
}


def _redis_available() -> bool:
    return importlib.util.find_spec("redis") is not None


@pytest.fixture(params=["local", "file", "redis"])
def make_at(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., AtClock]:
    if request.param == "local":
        return LocalAt
    if request.param == "file":
        return lambda **settings: FileAt(tmp_path / "budget.sqlite", **settings)
    url = request.getfixturevalue("redis_url")
    key = request.getfixturevalue("redis_key")
    return lambda **settings: RedisAt(url, key, **settings)


@pytest.mark.parametrize("case", list(TABLE))
def test_bookings(case: str, make_at: Callable[..., AtClock]) -> None:
    settings, steps = TABLE[case]
    limiter = make_at(**settings)
    for i, (op, now, amount, expected) in enumerate(steps):
        if op == "pause":
            limiter.pause_at(now, amount)
            continue
        got = limiter.reserve_at(now, int(amount))
        assert got == pytest.approx(expected, abs=1e-6), (i, op, now, amount)


def test_late_requests_still_fit_every_window() -> None:
    """Random arrivals, each sent up to the slack late: no window holds more than the budget."""
    rng = random.Random(7)
    for budget, window in ((30, 3.0), (7, 10.0), (600, 60.0), (1, 60.0)):
        slack = min(window / 20, 1.0)
        limiter = LocalAt(requests_per_minute=budget * 60 / window, window=window)
        now = 0.0
        sent: list[float] = []
        for _ in range(3000):
            now += rng.expovariate(budget / window * 1.5)  # 1.5x the budget, in bursts
            sent.append(now + limiter.reserve_at(now) + rng.uniform(0, slack))
        sent.sort()
        start = 0
        for end, moment in enumerate(sent):
            while sent[start] <= moment - window:
                start += 1
            assert end - start + 1 <= budget, (budget, window, moment)
        # and the limiter does not starve: the steady rate is window / (window + slack)
        achieved = (len(sent) - 1) / (sent[-1] - sent[0]) * window / budget
        assert achieved >= window / (window + slack) * 0.99, (budget, window)


BAD_SETTINGS = [
    ({"requests_per_minute": 0}, ValueError, "requests_per_minute must be a finite number > 0"),
    ({"requests_per_minute": -5}, ValueError, "requests_per_minute must be a finite number > 0"),
    ({"requests_per_minute": math.nan}, ValueError, "requests_per_minute must be a finite"),
    ({"requests_per_minute": math.inf}, ValueError, "requests_per_minute must be a finite"),
    ({"requests_per_minute": "600"}, TypeError, "requests_per_minute must be a number, not str"),
    ({"requests_per_minute": True}, TypeError, "requests_per_minute must be a number, not bool"),
    (
        {"requests_per_minute": 1e-9},
        ValueError,
        "requests_per_minute=1e-09 is too small: one request would wait 6.1e+10 s, "
        "more than 10,000,000 s",
    ),
    ({"tokens_per_minute": 1e-9}, ValueError, "tokens_per_minute=1e-09 is too small: one token"),
    ({"tokens_per_minute": -1.0}, ValueError, "tokens_per_minute must be a finite number > 0"),
    (
        {"requests_per_minute": 1e308, "window": 1e7},
        ValueError,
        "requests_per_minute=1e+308 is too large",
    ),
    ({"window": 0}, ValueError, "window must be a finite number > 0"),
    ({"window": math.inf}, ValueError, "window must be a finite number > 0"),
    ({"window": 1e8}, ValueError, "window must be at most 10,000,000 seconds"),
    ({"window": None}, TypeError, "window must be a number, not NoneType"),
]


@pytest.fixture(params=["local", "file", "redis"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., RateLimiter]:
    if request.param == "local":
        return LocalRateLimiter
    if request.param == "file":
        return lambda **settings: FileRateLimiter(tmp_path / "budget.sqlite", **settings)
    require(_redis_available(), "the redis package is not installed")
    from resilient_llm import RedisRateLimiter

    # Settings are checked before any connection: no server is needed for these.
    return lambda **settings: RedisRateLimiter("redis://127.0.0.1:1/0", **settings)


@pytest.mark.parametrize(("settings", "error", "message"), BAD_SETTINGS)
def test_bad_settings_name_the_option(
    factory: Callable[..., RateLimiter], settings: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error) as caught:
        factory(**settings)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda lim: lim.reserve(-1), ValueError, "tokens must be >= 0, got -1"),
        (lambda lim: lim.reserve(1.5), TypeError, "tokens must be an int, not float"),
        (lambda lim: lim.reserve(True), TypeError, "tokens must be an int, not bool"),
        (
            lambda lim: lim.reserve(10**20),
            ValueError,
            "tokens=100000000000000000000 would take more than 10,000,000 s of "
            "tokens_per_minute=1000",
        ),
        (lambda lim: lim.pause(-1), ValueError, "seconds must be a finite number between 0"),
        (lambda lim: lim.pause(math.nan), ValueError, "seconds must be a finite number"),
        (lambda lim: lim.pause(1e8), ValueError, "seconds must be a finite number"),
        (lambda lim: lim.pause("2"), TypeError, "seconds must be a number, not str"),
    ],
)
def test_bad_calls_name_the_argument(
    factory: Callable[..., RateLimiter],
    call: Callable[[RateLimiter], object],
    error: type,
    message: str,
) -> None:
    limiter = factory(requests_per_minute=60, tokens_per_minute=1000)
    with pytest.raises(error) as caught:
        call(limiter)
    assert message in str(caught.value)


def test_every_limiter_is_a_rate_limiter(factory: Callable[..., RateLimiter]) -> None:
    limiter = factory(requests_per_minute=60)
    assert isinstance(limiter, RateLimiter)
    assert "requests_per_minute=60, tokens_per_minute=None, window=60" in repr(limiter)
