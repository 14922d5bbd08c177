"""Client-side rate limiters: one request budget, shared as widely as the limiter is.

A limiter books each request before it is sent (:meth:`RateLimiter.reserve` returns how long the
caller must wait first) and hears about the server's 429s (:meth:`RateLimiter.pause`), so every
caller sharing it slows down together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread

from .._config import check_per_minute

__all__ = ["LocalRateLimiter", "RateLimiter", "apause", "areserve"]


@runtime_checkable
class RateLimiter(Protocol):
    """A request budget: the facades call it before every HTTP attempt."""

    def reserve(self, tokens: int = 0) -> float:
        """Book one request costing ``tokens``; seconds the caller must wait before sending."""

    def pause(self, seconds: float) -> None:
        """A server answered 429 with ``Retry-After``: every sharer waits ``seconds`` from now."""


async def areserve(limiter: Any, tokens: int = 0) -> float:
    """:meth:`RateLimiter.reserve` from async code, never blocking the event loop."""
    method = getattr(limiter, "areserve", None)
    if method is not None:
        return float(await method(tokens))
    if getattr(limiter, "blocking", True):
        return float(await anyio.to_thread.run_sync(limiter.reserve, tokens))
    return float(limiter.reserve(tokens))


async def apause(limiter: Any, seconds: float) -> None:
    """:meth:`RateLimiter.pause` from async code, never blocking the event loop."""
    method = getattr(limiter, "apause", None)
    if method is not None:
        await method(seconds)
    elif getattr(limiter, "blocking", True):
        await anyio.to_thread.run_sync(limiter.pause, seconds)
    else:
        limiter.pause(seconds)


class _Bucket:
    """A token bucket that may go into debt: each booking waits until its share is refilled."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_window: float, window: float) -> None:
        self.capacity = per_window
        self.rate = per_window / window
        self.level = per_window
        self.updated: float | None = None

    def book(self, cost: float, now: float) -> float:
        if self.updated is None:
            self.updated = now
        elif now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
        # A request larger than the whole bucket could never fit: it goes when the bucket is
        # full, and the debt it leaves delays the requests after it.
        needed = min(cost, self.capacity)
        wait = max(0.0, needed - self.level) / self.rate
        self.level -= cost
        return wait


class LocalRateLimiter:
    """An in-process budget for the threads and tasks of one process (thread-safe).

    Token buckets holding one window's budget, refilled continuously, starting full; bookings
    may go into debt so that concurrent callers are spaced out in the order they booked.

    Args:
        requests_per_minute: requests per window, or ``None``.
        tokens_per_minute: tokens per window, or ``None``.
        window: the window in seconds (60: "per minute").
    """

    blocking = False

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rpm = check_per_minute("requests_per_minute", requests_per_minute)
        tpm = check_per_minute("tokens_per_minute", tokens_per_minute)
        self.requests_per_minute = rpm
        self.tokens_per_minute = tpm
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = None if rpm is None else _Bucket(rpm, window)
        self._tokens = None if tpm is None else _Bucket(tpm, window)
        self._paused_until: float | None = None

    def reserve(self, tokens: int = 0) -> float:
        now = self._clock()
        with self._lock:
            wait = 0.0
            if self._paused_until is not None:
                wait = max(wait, self._paused_until - now)
            if self._requests is not None:
                wait = max(wait, self._requests.book(1, now))
            if self._tokens is not None:
                wait = max(wait, self._tokens.book(max(0, tokens), now))
            return wait

    def pause(self, seconds: float) -> None:
        until = self._clock() + max(0.0, seconds)
        with self._lock:
            if self._paused_until is None or until > self._paused_until:
                self._paused_until = until

    def __repr__(self) -> str:
        return (
            f"LocalRateLimiter(requests_per_minute={self.requests_per_minute}, "
            f"tokens_per_minute={self.tokens_per_minute})"
        )
