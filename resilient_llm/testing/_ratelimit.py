"""Sliding-window RPM/TPM accounting, as OpenAI's rate limiter behaves (no I/O, clock passed in)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimited:
    """Why a request was refused and when the window will have room for it.

    Attributes:
        kind: ``"requests"`` or ``"tokens"`` (OpenAI's ``error.type`` for these 429s).
        limit: The budget per window.
        used: What the window holds now.
        requested: What this request needs (1 for requests).
        retry_after: Seconds until it would be admitted, or None when it never fits.
    """

    kind: str
    limit: int
    used: int
    requested: int
    retry_after: float | None


class SlidingWindowLimiter:
    """Admit a request only if the last `window` seconds leave room for it.

    Refused requests consume nothing, so `RateLimited.retry_after` is exact: a client that waits
    that long (and meets no competition) is admitted.
    """

    def __init__(self, rpm: int | None, tpm: int | None, window: float = 60.0) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.window = window
        self._admitted: deque[tuple[float, int]] = deque()
        self._tokens = 0

    def acquire(self, now: float, tokens: int) -> RateLimited | None:
        """Admit and record a request, or say why not.

        Args:
            now: Current time on a monotonic clock.
            tokens: Tokens the request bills.

        Returns:
            None if admitted, else the refusal.
        """
        admitted = self._admitted
        cutoff = now - self.window
        while admitted and admitted[0][0] <= cutoff:
            self._tokens -= admitted.popleft()[1]
        if self.rpm is not None and len(admitted) >= self.rpm:
            # The window must drop len - rpm + 1 requests: the oldest ones go first.
            expiry = admitted[len(admitted) - self.rpm][0] + self.window
            return RateLimited("requests", self.rpm, len(admitted), 1, expiry - now)
        if self.tpm is not None and self._tokens + tokens > self.tpm:
            if tokens > self.tpm:
                return RateLimited("tokens", self.tpm, self._tokens, tokens, None)
            excess = self._tokens + tokens - self.tpm
            freed = 0
            wait = 0.0
            for stamp, used in admitted:
                freed += used
                if freed >= excess:
                    wait = stamp + self.window - now
                    break
            return RateLimited("tokens", self.tpm, self._tokens, tokens, wait)
        admitted.append((now, tokens))
        self._tokens += tokens
        return None
