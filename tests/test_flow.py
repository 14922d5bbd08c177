"""Flow control arithmetic: the AIMD concurrency target (frozen clock).

The rate limiters have their own tests (tests/limits).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from resilient_llm._batch.flow import AdaptiveLimit

# --- AdaptiveLimit -------------------------------------------------------------------------------


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
