"""`LocalRateLimiter`: one budget shared by the threads and tasks of one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._budget import NEVER, Budget, BudgetSettings, check_pause
from ._fork import after_fork

__all__ = ["LocalRateLimiter"]


class LocalRateLimiter(BudgetSettings):
    """Requests-per-minute and tokens-per-minute budgets for one process.

    Token buckets that may go into debt: :meth:`reserve` books at once and says how long to
    wait, so concurrent callers are spaced out in the order they booked. Requests are paced:
    one goes at once when the limiter is idle, the next ones evenly spaced, so that any
    ``window`` seconds hold at most ``requests_per_minute * window / 60`` requests even when
    they reach the server up to a twentieth of the window (at most a second) late; the steady
    rate is 98.4% of the budget for a 60 s window. Tokens are paid for after the request: a
    request goes once the previous ones' tokens are paid for, so a window holds at most the
    token budget plus one request's tokens. :meth:`pause` holds every booking until the
    server's ``Retry-After`` has passed.

    Thread-safe, and never blocks: the async methods run inline on the event loop.

    Args:
        requests_per_minute: The request budget, or ``None`` for no limit.
        tokens_per_minute: The token budget, or ``None`` for no limit.
        window: Seconds over which the budget is counted (60, as OpenAI's "per minute"; a
            server that counts over shorter periods wants a shorter window).
        clock: Seconds on a clock that never goes back (``time.monotonic``).

    Raises:
        TypeError, ValueError: A setting is invalid (the message names it).
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budget = Budget.of(requests_per_minute, tokens_per_minute, window)
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._clock = clock
        self._lock = threading.Lock()
        self._tats = (NEVER, NEVER)
        self._paused_until = NEVER
        after_fork(self)

    def reserve(self, tokens: int = 0) -> float:
        """:meth:`RateLimiter.reserve`, for this process.

        Raises ``TypeError`` / ``ValueError`` when ``tokens`` is not an int >= 0.
        """
        cost = self._budget.check_tokens(tokens)
        with self._lock:
            self._tats, wait = self._budget.book(
                self._tats, self._clock(), cost, self._paused_until
            )
        return wait

    def pause(self, seconds: float) -> None:
        """Hold every booking for ``seconds`` from now (a 429's ``Retry-After``).

        Args:
            seconds: The server's delay.

        Raises:
            TypeError, ValueError: ``seconds`` is not a finite number >= 0.
        """
        delay = check_pause(seconds)
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + delay)

    async def areserve(self, tokens: int = 0) -> float:
        """:meth:`reserve`, for async callers (it never blocks)."""
        return self.reserve(tokens)

    async def apause(self, seconds: float) -> None:
        """:meth:`pause`, for async callers (it never blocks)."""
        self.pause(seconds)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRateLimiter({self._budget.describe()})"
