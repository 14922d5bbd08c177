"""Errors raised by resilient_llm itself.

Errors from the server keep their official ``openai`` types (``openai.RateLimitError``,
``openai.BadRequestError``...): when retries run out the last one is raised unchanged, with a note
listing the attempts. Only failures that are this library's own get a type of their own::

    ResilientLLMError
     ├── DeadlineExceeded        (also a TimeoutError) the wall-clock budget of a call ran out
     ├── InvalidInput            (also a ValueError) an input never sent: empty, too long...
     ├── BatchFailed             raised by BatchResult.raise_for_failures(); carries the result
     └── ClientClosedError       the client was used after close() / aclose()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batch import BatchResult

__all__ = [
    "BatchFailed",
    "ClientClosedError",
    "DeadlineExceeded",
    "InvalidInput",
    "ResilientLLMError",
]


class ResilientLLMError(Exception):
    """Root of every error that resilient_llm raises on its own account."""


class DeadlineExceeded(ResilientLLMError, TimeoutError):
    """The wall-clock deadline of one logical call ran out, retries and back-off included.

    Chained (``__cause__``) to the last underlying error when there was one.

    Attributes:
        operation: what was being called, for example ``"embeddings"``.
        deadline: the budget in seconds.
        elapsed: seconds spent when the call gave up.
        attempts: how many attempts were started.
    """

    def __init__(self, operation: str, *, deadline: float, elapsed: float, attempts: int) -> None:
        self.operation = operation
        self.deadline = deadline
        self.elapsed = elapsed
        self.attempts = attempts
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"{operation}: deadline of {deadline:g} s exceeded after {attempts} {plural} "
            f"in {elapsed:.2f} s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_deadline_exceeded,
            (self.operation, self.deadline, self.elapsed, self.attempts),
        )


def _rebuild_deadline_exceeded(
    operation: str, deadline: float, elapsed: float, attempts: int
) -> DeadlineExceeded:
    return DeadlineExceeded(operation, deadline=deadline, elapsed=elapsed, attempts=attempts)


class InvalidInput(ResilientLLMError, ValueError):
    """An input item that cannot be sent (not a string, empty, over the model's limit).

    In a batch it fails that item alone; it never reaches the network.
    """


class ClientClosedError(ResilientLLMError, RuntimeError):
    """The client was used after ``close()`` / ``aclose()``."""


class BatchFailed(ResilientLLMError):
    """Raised by :meth:`BatchResult.raise_for_failures` when at least one item failed.

    Attributes:
        result: the full :class:`BatchResult`, successes included.
    """

    def __init__(self, result: BatchResult[Any]) -> None:
        self.result = result
        failures = result.failures
        first = failures[0] if failures else None
        detail = (
            f"; first: item {first.index}: {first.error_type}: {first.message}" if first else ""
        )
        super().__init__(
            f"{len(failures)} of {result.stats.total} items failed{detail}",
        )
