"""Flow control arithmetic for batches: adaptive concurrency and client-side rate budgets.

Pure and clock-free: callers pass ``now`` (a monotonic clock reading, in seconds) and carry out
the answers themselves: the sync shell by resizing its gate and sleeping in its worker threads,
the async shell with anyio. Both classes are thread-safe.
"""

from __future__ import annotations

import math
import threading

__all__ = ["AdaptiveLimit", "RateBudget"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_number(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


class AdaptiveLimit:
    """Additive-increase / multiplicative-decrease target for concurrent requests.

    Starts at ``maximum``. A 429 halves the target (never below ``minimum``); ``limit``
    consecutive successes since the last change raise it by one (never above ``maximum``).
    Decreases are at most one per ``cooldown`` seconds: the 429s of requests that were already
    in flight when the first one came back describe the same overload and count once.

    Args:
        maximum: the user's concurrency bound.
        minimum: the floor of the target.
        cooldown: seconds after a decrease during which further 429s do not decrease again.

    Raises:
        TypeError, ValueError: an argument is invalid (the message names it).
    """

    def __init__(self, maximum: int, minimum: int = 1, *, cooldown: float = 1.0) -> None:
        self.maximum = _check_int("maximum", maximum, 1)
        self.minimum = _check_int("minimum", minimum, 1)
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({minimum}) must be <= maximum ({maximum})")
        self.cooldown = _check_number("cooldown", cooldown, allow_zero=True)
        self._lock = threading.Lock()
        self._limit = self.maximum
        self._streak = 0
        self._last_decrease: float | None = None

    @property
    def limit(self) -> int:
        """The current target number of requests in flight."""
        return self._limit

    def on_success(self) -> bool:
        """Count a request that was not rate limited; returns whether the target grew."""
        with self._lock:
            self._streak += 1
            if self._streak >= self._limit and self._limit < self.maximum:
                self._limit += 1
                self._streak = 0
                return True
            return False

    def on_rate_limited(self, now: float) -> bool:
        """Count a 429 answered at ``now``; returns whether the target shrank."""
        with self._lock:
            self._streak = 0
            last = self._last_decrease
            if last is not None and now - last < self.cooldown:
                return False
            smaller = max(self.minimum, self._limit // 2)
            if smaller == self._limit:
                return False
            self._limit = smaller
            self._last_decrease = now
            return True

    def __repr__(self) -> str:
        return f"AdaptiveLimit(limit={self._limit}, minimum={self.minimum}, maximum={self.maximum})"


class _Bucket:
    """A token bucket that may go into debt: each booking waits until its share is refilled."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float | None) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.level = per_minute
        self.updated = now

    def book(self, cost: float, now: float) -> float:
        if self.updated is None:
            self.updated = now
        elif now > self.updated:
            # A clock reading older than the last one adds nothing (and never refunds).
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
        # A request larger than the whole bucket could never fit: it goes when the bucket is
        # full, and the debt it leaves delays the requests after it.
        needed = min(cost, self.capacity)
        wait = max(0.0, needed - self.level) / self.rate
        self.level -= cost
        return wait


class RateBudget:
    """Client-side requests-per-minute and tokens-per-minute budgets (token buckets).

    Each bucket holds one minute's budget and refills at budget/60 per second; it starts full.
    :meth:`reserve` books a request at once and says how long to wait before sending it, so
    concurrent callers are spaced out in the order they booked. A server's 429 ``Retry-After``
    pauses every booking until it has passed (:meth:`penalize`).

    Args:
        requests_per_minute: the request budget, or ``None`` for no limit.
        tokens_per_minute: the token budget, or ``None`` for no limit.

    Raises:
        TypeError, ValueError: a budget is not a finite number > 0 (the message names it).
    """

    def __init__(
        self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        self.requests_per_minute = (
            None
            if requests_per_minute is None
            else _check_number("requests_per_minute", requests_per_minute, allow_zero=False)
        )
        self.tokens_per_minute = (
            None
            if tokens_per_minute is None
            else _check_number("tokens_per_minute", tokens_per_minute, allow_zero=False)
        )
        self._lock = threading.Lock()
        self._requests = (
            None if self.requests_per_minute is None else _Bucket(self.requests_per_minute, None)
        )
        self._tokens = (
            None if self.tokens_per_minute is None else _Bucket(self.tokens_per_minute, None)
        )
        self._paused_until: float | None = None

    @property
    def limited(self) -> bool:
        """Whether any budget is set."""
        return self._requests is not None or self._tokens is not None

    def reserve(self, tokens: int, now: float) -> float:
        """Book one request of ``tokens`` tokens at ``now``; returns seconds to wait first.

        Raises:
            ValueError: ``tokens`` is negative.
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be an int >= 0, got {tokens!r}")
        with self._lock:
            wait = 0.0
            if self._paused_until is not None:
                wait = max(wait, self._paused_until - now)
            if self._requests is not None:
                wait = max(wait, self._requests.book(1, now))
            if self._tokens is not None:
                wait = max(wait, self._tokens.book(tokens, now))
            return wait

    def penalize(self, retry_after: float, now: float) -> None:
        """The server said to retry after ``retry_after`` seconds: hold new bookings until then.

        Raises:
            ValueError: ``retry_after`` is negative or not finite.
        """
        delay = _check_number("retry_after", retry_after, allow_zero=True)
        with self._lock:
            until = now + delay
            if self._paused_until is None or until > self._paused_until:
                self._paused_until = until

    def __repr__(self) -> str:
        return (
            f"RateBudget(requests_per_minute={self.requests_per_minute}, "
            f"tokens_per_minute={self.tokens_per_minute})"
        )
