"""The three limiters behind one test interface: book and pause at a frozen clock reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from resilient_llm import FileRateLimiter, LocalRateLimiter


class Frozen:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class AtClock(Protocol):
    """A limiter driven at explicit clock readings."""

    def reserve_at(self, now: float, tokens: int = 0) -> float: ...

    def pause_at(self, now: float, seconds: float) -> None: ...


class LocalAt:
    def __init__(self, **settings: Any) -> None:
        self.clock = Frozen()
        self.limiter = LocalRateLimiter(clock=self.clock, **settings)

    def reserve_at(self, now: float, tokens: int = 0) -> float:
        self.clock.now = now
        return self.limiter.reserve(tokens)

    def pause_at(self, now: float, seconds: float) -> None:
        self.clock.now = now
        self.limiter.pause(seconds)


class FileAt:
    # The file limiter reads the wall clock; the tests replace it with a frozen one. A clock
    # near today's wall clock keeps the stored numbers as large as in real use.
    OFFSET = 1_700_000_000.0

    def __init__(self, path: Path, **settings: Any) -> None:
        self.clock = Frozen()
        self.limiter = FileRateLimiter(path, **settings)
        self.limiter._clock = lambda: self.OFFSET + self.clock.now

    def reserve_at(self, now: float, tokens: int = 0) -> float:
        self.clock.now = now
        return self.limiter.reserve(tokens)

    def pause_at(self, now: float, seconds: float) -> None:
        self.clock.now = now
        self.limiter.pause(seconds)


class RedisAt:
    """Runs the Lua script with a clock reading in place of Redis's TIME."""

    OFFSET = 1_700_000_000.0

    def __init__(self, url: str, key: str, **settings: Any) -> None:
        from resilient_llm import RedisRateLimiter

        self.limiter = RedisRateLimiter(url, key=key, **settings)

    def reserve_at(self, now: float, tokens: int = 0) -> float:
        return self.limiter._run("reserve", tokens, now=self.OFFSET + now)

    def pause_at(self, now: float, seconds: float) -> None:
        self.limiter._run("pause", seconds, now=self.OFFSET + now)
