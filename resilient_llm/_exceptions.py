"""Errors raised by resilient_llm itself.

Errors from the server keep their official ``openai`` types (``openai.RateLimitError``,
``openai.BadRequestError``...): when retries run out the last one is raised unchanged, with a note
listing the attempts. Only failures that are this library's own get a type of their own::

    ResilientLLMError
     ├── DeadlineExceeded     (also a TimeoutError) the wall-clock budget of a call ran out
     ├── InvalidInput         (also a ValueError) an input never sent: empty, too long...
     ├── InvalidResponse      a 200 answer that fails its checks (retried like a 5xx unless it
     │                        explains itself: a refusal, a content filter, tool calls)
     ├── ServerUnreachable    (also a ConnectionError) a batch found nothing listening at base_url
     ├── StreamInterrupted    a stream broke after its first chunk (.chunks, .text)
     ├── BatchFailed          raised by BatchResult.raise_for_failures(); carries the result
     └── ClientClosedError    (also a RuntimeError) the client was used after close() / aclose()

Every error pickles (for process pools and Ray) and keeps its attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._messages import seconds

if TYPE_CHECKING:
    from ._batch.results import BatchResult

__all__ = [
    "BatchFailed",
    "ClientClosedError",
    "DeadlineExceeded",
    "InvalidInput",
    "InvalidResponse",
    "ResilientLLMError",
    "ServerUnreachable",
    "StreamInterrupted",
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
        reason: why it gave up when that is more than "time ran out" (for example the server
            asked to wait longer than the time left).
        chunks: for a stream, how many chunks were delivered before the deadline (else None).
        text: for a stream, the text delivered so far (else None).
    """

    def __init__(
        self,
        operation: str,
        *,
        deadline: float,
        elapsed: float,
        attempts: int,
        reason: str | None = None,
        chunks: int | None = None,
        text: str | None = None,
    ) -> None:
        self.operation = operation
        self.deadline = deadline
        self.elapsed = elapsed
        self.attempts = attempts
        self.reason = reason
        self.chunks = chunks
        self.text = text
        plural = "attempt" if attempts == 1 else "attempts"
        message = (
            f"{operation}: deadline of {seconds(deadline)} exceeded after {attempts} {plural} "
            f"in {seconds(elapsed)}"
        )
        if chunks is not None:
            message += f", {chunks} chunk{'' if chunks == 1 else 's'} delivered"
        if reason:
            message += f": {reason}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                DeadlineExceeded,
                (self.operation,),
                {
                    "deadline": self.deadline,
                    "elapsed": self.elapsed,
                    "attempts": self.attempts,
                    "reason": self.reason,
                    "chunks": self.chunks,
                    "text": self.text,
                },
            ),
        )


def _rebuild(cls: type[Exception], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    return cls(*args, **kwargs)


class InvalidInput(ResilientLLMError, ValueError):
    """An input item that cannot be sent (not a string, empty, over the model's limit).

    In a batch it fails that item alone; it never reaches the network.
    """


class InvalidResponse(ResilientLLMError):
    """The server answered 200 with something that cannot be trusted as data.

    An embeddings answer with a vector missing, extra, duplicated, empty, not finite or of the
    wrong length; a chat answer with no choice or no text; a 200 whose body is an error. It is
    never returned as data. Retried like a 5xx, unless ``retryable`` is False: an empty answer
    that explains itself (a refusal, a content filter, tool calls) fails at once.

    Attributes:
        retryable: whether another attempt may get a good answer.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (InvalidResponse, (str(self),), {"retryable": self.retryable}))


class ServerUnreachable(ResilientLLMError, ConnectionError):
    """Nothing answers at ``base_url``: connections are refused, the name does not resolve, or
    the TLS handshake fails, and no request of the batch has succeeded.

    The batch stops sending to it; items not yet sent fail with this error.

    Attributes:
        base_url: the URL the client was pointed at.
        attempts: connection attempts that failed.
    """

    def __init__(self, base_url: str, *, attempts: int, detail: str = "") -> None:
        self.base_url = base_url
        self.attempts = attempts
        self.detail = detail
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"cannot reach the server at {base_url}{reason}: {attempts} connection attempt"
            f"{'' if attempts == 1 else 's'} failed and none succeeded; is the server running "
            "and is base_url right?"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                ServerUnreachable,
                (self.base_url,),
                {"attempts": self.attempts, "detail": self.detail},
            ),
        )


class StreamInterrupted(ResilientLLMError):
    """A stream broke after its first chunk; it is not retried, since that would repeat text.

    Chained (``__cause__``) to what broke it.

    Attributes:
        chunks: how many chunks were delivered.
        text: the text delivered so far.
    """

    def __init__(self, message: str, *, chunks: int, text: str) -> None:
        self.chunks = chunks
        self.text = text
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (StreamInterrupted, (str(self),), {"chunks": self.chunks, "text": self.text}),
        )


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
        super().__init__(f"{len(failures)} of {result.stats.total} items failed{detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchFailed, (self.result,))
