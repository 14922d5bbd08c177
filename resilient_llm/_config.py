"""Configuration values: frozen, validated on construction, so bad settings fail before any I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RetryPolicy", "Timeouts", "TimeoutsLike", "check_deadline", "check_positive"]


# Sockets cannot wait longer than about 9e9 s; no sensible budget comes near this.
MAX_SECONDS = 10_000_000.0


def check_positive(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float if it is a number of seconds in (0, 1e7], else raise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if number > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:,.0f} seconds, got {value!r}")
    return number


def check_deadline(value: object, name: str = "deadline") -> float | None:
    """Validate a deadline in seconds; ``None`` means no wall-clock budget."""
    return check_positive(name, value, allow_none=True)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt HTTP timeouts in seconds, applied natively by the HTTP client.

    Args:
        connect: to establish a connection.
        read: between two chunks of the response (a trickling server resets it: the call's
            ``deadline`` is what bounds the whole call).
        write: between two chunks of the request.
        pool: to get a connection from the pool.
    """

    connect: float = 5.0
    read: float = 60.0
    write: float = 30.0
    pool: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool"):
            check_positive(f"timeouts.{name}", getattr(self, name))

    @classmethod
    def coerce(cls, value: TimeoutsLike) -> Timeouts:
        """Accept a :class:`Timeouts`, or one number that sets all four."""
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls()
        seconds = check_positive("timeouts", value)
        assert seconds is not None
        return cls(connect=seconds, read=seconds, write=seconds, pool=seconds)

    def as_dict(self) -> dict[str, float]:
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": self.pool}


TimeoutsLike = Timeouts | float | int | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed attempts are retried.

    Args:
        max_attempts: attempts in all, the first one included (1 disables retries).
        base_delay: back-off before the first retry; doubles each retry (full jitter).
        max_delay: cap of one back-off sleep.
        max_retry_after: the longest server-directed delay (``Retry-After``) honoured; a server
            asking for longer fails the call at once rather than stalling it.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"retry.max_attempts must be an int, not {type(self.max_attempts).__name__}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be >= 1, got {self.max_attempts}")
        check_positive("retry.base_delay", self.base_delay)
        check_positive("retry.max_delay", self.max_delay)
        check_positive("retry.max_retry_after", self.max_retry_after)
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"retry.max_delay ({self.max_delay}) must be >= "
                f"retry.base_delay ({self.base_delay})"
            )
