"""Flow control arithmetic: AIMD concurrency target and client-side rate budgets (frozen clock)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from resilient_llm._flow import AdaptiveLimit, RateBudget

# --- AdaptiveLimit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"maximum": 0}, ValueError, "maximum"),
        ({"maximum": -3}, ValueError, "maximum"),
        ({"maximum": 2.0}, TypeError, "maximum"),
        ({"maximum": True}, TypeError, "maximum"),
        ({"maximum": 4, "minimum": 0}, ValueError, "minimum"),
        ({"maximum": 4, "minimum": 5}, ValueError, "minimum"),
        ({"maximum": 4, "cooldown": -1.0}, ValueError, "cooldown"),
        ({"maximum": 4, "cooldown": math.nan}, ValueError, "cooldown"),
        ({"maximum": 4, "cooldown": math.inf}, ValueError, "cooldown"),
    ],
)
def test_adaptive_limit_validation(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        AdaptiveLimit(**kwargs)


def test_adaptive_limit_starts_at_maximum() -> None:
    assert AdaptiveLimit(8).limit == 8
    assert AdaptiveLimit(1).limit == 1


# Each step: ("ok",) one success, ("429", now) one rate-limited answer. Then the expected limit.
Step = tuple[tuple[Any, ...], int]


@pytest.mark.parametrize(
    ("maximum", "minimum", "steps"),
    [
        pytest.param(
            8,
            1,
            [
                (("429", 0.0), 4),
                (("429", 0.2), 4),  # in flight when the first came back: same overload
                (("429", 0.99), 4),
                (("429", 1.0), 2),  # cooldown over
                (("429", 2.0), 1),
                (("429", 3.0), 1),  # floor
            ],
            id="halving-with-cooldown-and-floor",
        ),
        pytest.param(
            8,
            3,
            [(("429", 0.0), 4), (("429", 5.0), 3), (("429", 10.0), 3)],
            id="custom-floor",
        ),
        pytest.param(
            4,
            1,
            [
                (("429", 0.0), 2),
                (("429", 1.0), 1),
                (("ok",), 2),  # 1 success at limit 1
                (("ok",), 2),
                (("ok",), 3),  # 2 successes at limit 2
                (("ok",), 3),
                (("ok",), 3),
                (("ok",), 4),  # 3 successes at limit 3
                (("ok",), 4),
                (("ok",), 4),
                (("ok",), 4),
                (("ok",), 4),  # never above maximum
            ],
            id="additive-increase",
        ),
        pytest.param(
            8,
            1,
            [
                (("429", 0.0), 4),
                (("ok",), 4),
                (("ok",), 4),
                (("ok",), 4),
                (("429", 0.5), 4),  # no decrease (cooldown) but the streak starts over
                (("ok",), 4),
                (("ok",), 4),
                (("ok",), 4),
                (("ok",), 5),
            ],
            id="a-429-resets-the-streak",
        ),
        pytest.param(
            6,
            1,
            [(("429", 10.0), 3), (("429", 9.0), 3), (("429", 11.5), 1)],
            id="odd-halves-down",
        ),
    ],
)
def test_adaptive_limit_sequences(maximum: int, minimum: int, steps: list[Step]) -> None:
    limit = AdaptiveLimit(maximum, minimum, cooldown=1.0)
    for number, (event, expected) in enumerate(steps):
        before = limit.limit
        changed = limit.on_success() if event[0] == "ok" else limit.on_rate_limited(event[1])
        assert limit.limit == expected, f"step {number}: {event}"
        assert changed is (limit.limit != before)


def test_adaptive_limit_zero_cooldown_decreases_every_time() -> None:
    limit = AdaptiveLimit(16, cooldown=0.0)
    for expected in (8, 4, 2, 1, 1):
        limit.on_rate_limited(0.0)
        assert limit.limit == expected


def test_adaptive_limit_is_thread_safe() -> None:
    limit = AdaptiveLimit(64)
    limit.on_rate_limited(0.0)  # 32
    start = threading.Barrier(8)
    decreased: list[bool] = []

    def burst() -> None:
        start.wait()
        # Every thread sees a 429 at the same instant: one decrease in all.
        decreased.append(limit.on_rate_limited(5.0))

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert decreased.count(True) == 1
    assert limit.limit == 16

    def succeed() -> None:
        for _ in range(2_000):
            limit.on_success()

    threads = [threading.Thread(target=succeed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 16000 successes are more than enough to climb from 16 to 64 (16+17+...+63 = 1920).
    assert limit.limit == 64


# --- RateBudget ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (0.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        ("60", TypeError),
        (True, TypeError),
    ],
)
def test_rate_budget_validation(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=name):
        RateBudget(**{name: value})


def test_unlimited_budget_never_waits() -> None:
    budget = RateBudget()
    assert not budget.limited
    assert all(budget.reserve(10**9, 0.0) == 0.0 for _ in range(1000))


@pytest.mark.parametrize(
    ("rpm", "tpm", "bookings", "waits"),
    [
        pytest.param(
            60,
            None,
            [(0, 0.0)] * 62,
            [0.0] * 60 + [1.0, 2.0],
            id="rpm-burst-then-one-per-second",
        ),
        pytest.param(
            60,
            None,
            [(0, 0.0)] * 60 + [(0, 30.0), (0, 30.0)],
            [0.0] * 62,
            id="rpm-refills-over-time",
        ),
        pytest.param(
            120,
            None,
            [(0, 0.0)] * 120 + [(0, 0.0), (0, 0.25), (0, 10.0)],
            [0.0] * 120 + [0.5, 0.75, 0.0],
            id="rpm-120",
        ),
        pytest.param(
            None,
            6000,
            [(4000, 0.0), (4000, 0.0), (1000, 10.0)],
            [0.0, 20.0, 20.0],
            id="tpm-debt-is-repaid-in-order",
        ),
        pytest.param(
            None,
            1000,
            [(5000, 0.0), (1, 0.0)],
            [0.0, 240.06],
            id="oversize-admitted-when-full-its-debt-delays-the-next",
        ),
        pytest.param(
            None,
            1000,
            [(500, 0.0), (5000, 0.0)],
            [0.0, 30.0],
            id="oversize-waits-until-full",
        ),
        pytest.param(
            60,
            600,
            [(300, 0.0), (300, 0.0), (300, 0.0), (0, 0.0)],
            [0.0, 0.0, 30.0, 30.0],
            id="both-budgets-longest-wait-wins",
        ),
        pytest.param(
            60,
            None,
            [(0, 10.0)] * 60 + [(0, 5.0)],
            [0.0] * 60 + [1.0],
            id="clock-going-back-adds-nothing",
        ),
    ],
)
def test_rate_budget_waits(
    rpm: float | None, tpm: float | None, bookings: list[tuple[int, float]], waits: list[float]
) -> None:
    budget = RateBudget(requests_per_minute=rpm, tokens_per_minute=tpm)
    got = [budget.reserve(tokens, now) for tokens, now in bookings]
    assert got == pytest.approx(waits, abs=0.01)


def test_penalize_pauses_new_bookings() -> None:
    budget = RateBudget()
    budget.penalize(2.5, now=10.0)
    assert budget.reserve(1, 10.0) == pytest.approx(2.5)
    assert budget.reserve(1, 11.0) == pytest.approx(1.5)
    # A shorter retry-after never shortens the pause.
    budget.penalize(0.5, now=11.0)
    assert budget.reserve(1, 11.0) == pytest.approx(1.5)
    budget.penalize(5.0, now=11.0)
    assert budget.reserve(1, 12.0) == pytest.approx(4.0)
    assert budget.reserve(1, 16.0) == 0.0
    assert budget.reserve(1, 20.0) == 0.0


def test_penalize_combines_with_budgets() -> None:
    budget = RateBudget(requests_per_minute=60)
    for _ in range(60):
        budget.reserve(0, 0.0)
    budget.penalize(0.5, now=0.0)
    assert budget.reserve(0, 0.0) == pytest.approx(1.0)  # the budget's wait is longer
    budget.penalize(30.0, now=0.0)
    assert budget.reserve(0, 0.0) == pytest.approx(30.0)  # the pause is longer


@pytest.mark.parametrize("retry_after", [-1.0, math.nan, math.inf])
def test_penalize_rejects_bad_delays(retry_after: float) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        RateBudget().penalize(retry_after, now=0.0)


@pytest.mark.parametrize("tokens", [-1, 1.5, True])
def test_reserve_rejects_bad_token_counts(tokens: Any) -> None:
    with pytest.raises(ValueError, match="tokens"):
        RateBudget(tokens_per_minute=100).reserve(tokens, 0.0)


def test_rate_budget_is_thread_safe() -> None:
    budget = RateBudget(requests_per_minute=60)
    start = threading.Barrier(8)
    waits: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        start.wait()
        for _ in range(100):
            wait = budget.reserve(0, 0.0)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=book) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every booking got its own slot: 60 at once, then one per second.
    assert sorted(waits) == pytest.approx([0.0] * 60 + [float(k) for k in range(1, 741)])
