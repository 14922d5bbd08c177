"""The budget arithmetic every limiter shares: validation and one booking (pure, no clock, no I/O).

A budget of ``N`` per minute counted over a window of ``W`` seconds allows ``C = N * W / 60`` in
any ``W`` seconds. Each budget is a token bucket kept as a single number, its "theoretical
arrival time" (GCRA, as in ATM networks and redis-cell): ``tat`` runs ahead of the clock by the
debt booked so far. One number per bucket is what makes the file and Redis limiters one short
atomic update.

Requests are paced, not burst: one goes at once when the limiter is idle, the next ones every
``(W + s) / C`` seconds, where ``s`` (the slack) is a twentieth of the window, at most one
second. Any ``W + s`` seconds then hold at most ``C`` requests, so requests that reach the
server up to ``s`` seconds late (a busy machine, a slow connect) still never put more than
``C`` in a server's ``W``-second window. OpenAI and Azure count over shorter periods than the
minute they quote and refuse bursts, which pacing never sends. The price is the steady rate,
``W / (W + s)`` of the budget: 98.4% for a 60 s window, 95.2% for windows up to 20 s.

Tokens are counted when a request is booked and paid for afterwards: a request goes as soon as
the previous ones' tokens are paid for, and its own tokens delay the requests after it. So any
``W + s`` seconds hold at most the token budget plus the tokens of one request: the one
documented burst, which a server's window absorbs when requests are small next to the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._config import MAX_SECONDS

__all__ = ["NEVER", "Bucket", "Budget", "BudgetSettings", "check_pause"]

# "No booking yet" and "not paused": earlier than any clock reading of any clock.
NEVER = -math.inf
# The slack is a twentieth of the window, capped: a minute needs no more than a second of it.
_SLACK_FRACTION = 0.05
_MAX_SLACK = 1.0


@dataclass(frozen=True, slots=True)
class Bucket:
    """One budget as GCRA parameters.

    Attributes:
        interval: Seconds one unit (a request, a token) adds to the bucket's ``tat``.
        tolerance: How far ``tat`` may run ahead of the clock with no wait, in seconds.
        capacity: What a full bucket holds, in units (``tolerance / interval``).
    """

    interval: float
    tolerance: float
    capacity: float

    def book(self, tat: float, now: float, cost: float, paused_until: float) -> tuple[float, float]:
        """Book ``cost`` units at ``now``.

        Args:
            tat: The bucket's state (``NEVER`` when it has never been used).
            now: The clock reading of this booking.
            cost: Units this request takes.
            paused_until: No request before this time, and none from a full bucket after it.

        Returns:
            The new ``tat`` and the seconds to wait before sending.
        """
        # After a pause the bucket restarts empty: the server has just said its window is full.
        start = max(tat, now, paused_until + self.tolerance)
        # A request waits until the bucket holds one unit (no debt left), not its whole cost:
        # an idle limiter lets a large request go at once, and its debt delays the next ones.
        needed = min(cost, self.capacity)
        wait = start + needed * self.interval - self.tolerance - now
        return start + cost * self.interval, max(0.0, wait)


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _check_optional(name: str, value: object) -> float | None:
    return None if value is None else _check_number(name, value)


def _bucket(name: str, per_minute: float | None, window: float, unit: str) -> Bucket | None:
    if per_minute is None:
        return None
    slack = min(_SLACK_FRACTION * window, _MAX_SLACK)
    per_window = per_minute * window / 60.0
    if not math.isfinite(per_window):
        raise ValueError(f"{name}={per_minute!r} is too large for a window of {window:g} s")
    interval = (window + slack) / per_window
    if not interval <= MAX_SECONDS:
        raise ValueError(
            f"{name}={per_minute!r} is too small: one {unit} would wait {interval:.3g} s, "
            f"more than {MAX_SECONDS:,.0f} s"
        )
    # A full bucket holds one unit: an idle limiter lets one request go at once, the next one
    # after `interval`, so C + 1 requests span W + s seconds.
    return Bucket(interval=interval, tolerance=interval, capacity=1.0)


@dataclass(frozen=True, slots=True)
class Budget:
    """Validated limiter settings, the one place every limiter checks its arguments.

    Args:
        requests_per_minute: Requests per minute, or ``None`` for no request budget.
        tokens_per_minute: Tokens per minute, or ``None`` for no token budget.
        window: Seconds over which the budget is counted.

    Raises:
        TypeError: A setting is not a number.
        ValueError: A setting is not finite and > 0, or so small that one request or token
            would wait longer than 10,000,000 s (the message names the setting).
    """

    requests_per_minute: float | None
    tokens_per_minute: float | None
    window: float
    requests: Bucket | None
    tokens: Bucket | None

    @classmethod
    def of(cls, requests_per_minute: object, tokens_per_minute: object, window: object) -> Budget:
        """Validate the three settings and derive both buckets."""
        span = _check_number("window", window)
        if span > MAX_SECONDS:
            raise ValueError(f"window must be at most {MAX_SECONDS:,.0f} seconds, got {window!r}")
        rpm = (
            None
            if requests_per_minute is None
            else _check_number("requests_per_minute", requests_per_minute)
        )
        tpm = (
            None
            if tokens_per_minute is None
            else _check_number("tokens_per_minute", tokens_per_minute)
        )
        return cls(
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            window=span,
            requests=_bucket("requests_per_minute", rpm, span, "request"),
            tokens=_bucket("tokens_per_minute", tpm, span, "token"),
        )

    def check_tokens(self, tokens: object) -> int:
        """A request's token cost: an int >= 0 that this budget can pay for in 1e7 s.

        Raises:
            TypeError, ValueError: It is not (the message names ``tokens``).
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int):
            raise TypeError(f"tokens must be an int, not {type(tokens).__name__}")
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens!r}")
        if self.tokens is not None and tokens > MAX_SECONDS / self.tokens.interval:
            raise ValueError(
                f"tokens={tokens} would take more than {MAX_SECONDS:,.0f} s of "
                f"tokens_per_minute={_g(self.tokens_per_minute)}"
            )
        return tokens

    def book(
        self, tats: tuple[float, float], now: float, tokens: int, paused_until: float
    ) -> tuple[tuple[float, float], float]:
        """Book one request of ``tokens`` tokens at ``now`` in both buckets.

        Args:
            tats: The request and token buckets' states.
            now: The clock reading of this booking.
            tokens: The request's token cost.
            paused_until: The shared pause (``NEVER`` when there is none).

        Returns:
            The new states, and the seconds to wait before sending (the longer of the two).
        """
        wait = max(0.0, paused_until - now)
        request_tat, token_tat = tats
        if self.requests is not None:
            request_tat, waited = self.requests.book(request_tat, now, 1, paused_until)
            wait = max(wait, waited)
        if self.tokens is not None:
            token_tat, waited = self.tokens.book(token_tat, now, tokens, paused_until)
            wait = max(wait, waited)
        return (request_tat, token_tat), wait

    def describe(self) -> str:
        """``requests_per_minute=..., tokens_per_minute=..., window=...`` for reprs."""
        return (
            f"requests_per_minute={_g(self.requests_per_minute)}, "
            f"tokens_per_minute={_g(self.tokens_per_minute)}, window={self.window:g}"
        )


def _g(value: float | None) -> str:
    return "None" if value is None else f"{value:g}"


def check_pause(seconds: object) -> float:
    """A pause in seconds: finite, >= 0, at most 10,000,000."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
    number = float(seconds)
    if not math.isfinite(number) or number < 0 or number > MAX_SECONDS:
        raise ValueError(
            f"seconds must be a finite number between 0 and {MAX_SECONDS:,.0f}, got {seconds!r}"
        )
    return number


class BudgetSettings:
    """The budget a limiter was given, as read-only properties (every limiter has them)."""

    _budget: Budget

    @property
    def requests_per_minute(self) -> float | None:
        """The request budget per minute, or ``None``."""
        return self._budget.requests_per_minute

    @property
    def tokens_per_minute(self) -> float | None:
        """The token budget per minute, or ``None``."""
        return self._budget.tokens_per_minute

    @property
    def window(self) -> float:
        """Seconds over which the budget is counted."""
        return self._budget.window
