"""What the server's request log says about a run: its busiest window, its throughput."""

from __future__ import annotations

from collections.abc import Sequence


def max_in_window(
    times: Sequence[float], window: float, weights: Sequence[float] | None = None
) -> float:
    """The most any window ``(t - window, t]`` holds, as the server's sliding window counts.

    Args:
        times: When each request arrived, in any order.
        window: The window's length in seconds.
        weights: What each request counts for (its tokens); 1 each by default.
    """
    pairs = sorted(zip(times, weights if weights is not None else [1.0] * len(times), strict=True))
    best = total = 0.0
    start = 0
    for moment, weight in pairs:
        total += weight
        while pairs[start][0] <= moment - window:
            total -= pairs[start][1]
            start += 1
        best = max(best, total)
    return best


def total_in(
    times: Sequence[float], start: float, end: float, weights: Sequence[float] | None = None
) -> float:
    """What arrived in ``[start, end)``."""
    weights = weights if weights is not None else [1.0] * len(times)
    return sum(w for t, w in zip(times, weights, strict=True) if start <= t < end)
