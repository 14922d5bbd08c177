"""What a call reports: the records hooks receive, the client's counters, a batch's sink."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from ._retry import Decision

__all__ = ["CallDetails", "CallSink", "ClientStats", "RetryDetails", "StatsCounter"]


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """Given to ``on_retry`` hooks before each back-off sleep (the shape of stamina's).

    Attributes:
        operation: the logical call, for example ``"chat.completions"``.
        attempt: the attempt that just failed (1-based).
        error_type: class name of its error.
        status: HTTP status, when the error has one.
        sleep: seconds until the next attempt.
        elapsed: seconds since the call started.
        error: the error itself.
    """

    operation: str
    attempt: int
    error_type: str
    status: int | None
    sleep: float
    elapsed: float
    error: BaseException = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallDetails:
    """Given to ``on_call`` hooks when a logical call ends, successfully or not.

    Attributes:
        operation: the logical call.
        attempts: attempts made.
        elapsed: seconds from start to end.
        ok: whether it returned a result.
        error_type: class name of the error it raised, if any.
        status: HTTP status of that error, if any.
        chunks: for a stream, the chunks delivered (else None).
    """

    operation: str
    attempts: int
    elapsed: float
    ok: bool
    error_type: str | None = None
    status: int | None = None
    chunks: int | None = None


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (``client.stats``)."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    deadline_exceeded: int = 0


class StatsCounter:
    """Thread-safe counters behind ``client.stats``."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ClientStats.__dataclass_fields__, 0)

    def add(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._counts[name] += value

    def snapshot(self) -> ClientStats:
        with self._lock:
            return ClientStats(**self._counts)


class CallSink(Protocol):
    """What a batch learns about the calls made on its behalf."""

    def sent(self) -> None:
        """One HTTP request is about to go out."""

    def refused(self, error: BaseException) -> None:
        """An attempt failed with ``error`` (told at once, before its slot is given back)."""

    def succeeded(self) -> None:
        """An attempt succeeded."""

    def failed(self, error: BaseException, decision: Decision, attempt: int) -> None:
        """Attempt number ``attempt`` failed; raising here ends the call with that error."""
