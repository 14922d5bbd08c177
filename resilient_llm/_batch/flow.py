"""What one batch shares between its workers: accounting, flow control, and whether it must end.

:class:`BatchState` is the batch's side of every call made for it (the :class:`~.._call.CallSink`
of those calls): it counts requests and retries, lowers the concurrency target on repeated 429s,
recognises a dead server, and ends the batch on an error that every further request would meet.
Pure and thread-safe; callers pass time in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._exceptions import InvalidInput, ServerUnreachable
from .._messages import connection_cause, describe
from .._retry import Action, Decision, ends_batch, is_connect_failure
from .accounting import BatchAccountant
from .planning import PlannedRequest
from .results import BatchResult, ItemFailure

__all__ = [
    "CONNECT_FAILURES_TO_GIVE_UP",
    "AdaptiveLimit",
    "BatchEnded",
    "BatchState",
    "ItemSink",
    "Outcome",
]

logger = logging.getLogger("resilient_llm")

T = TypeVar("T")

Outcome = tuple[int, Any]
"""``(index, value)`` for a success, ``(index, ItemFailure)`` for a failure."""

#: Connection attempts that must fail, with none of the batch succeeding, before the server is
#: declared unreachable (at least one of them a retry, so one back-off has passed).
CONNECT_FAILURES_TO_GIVE_UP = 3


class BatchEnded(Exception):
    """Internal: the batch ended while this request waited to go out; it is not sent."""


class ItemSink:
    """What one ``map`` item's own calls report: counted for the item, then told to the batch."""

    __slots__ = ("batch", "requests")

    def __init__(self, batch: BatchState[Any]) -> None:
        self.batch = batch
        self.requests = 0

    def sent(self) -> None:
        self.batch.sent()
        self.requests += 1

    def refused(self, error: BaseException) -> None:
        self.batch.refused(error)

    def succeeded(self) -> None:
        self.batch.succeeded()

    def failed(self, error: BaseException, decision: Decision, attempt: int) -> None:
        self.batch.failed(error, decision, attempt)


class AdaptiveLimit:
    """Additive-increase / multiplicative-decrease target for concurrent requests.

    Starts at ``maximum``. A 429 without ``Retry-After`` halves the target (never below
    ``minimum``); ``limit`` consecutive successes since the last change raise it by one (never
    above ``maximum``). Decreases are at most one per ``cooldown`` seconds: the 429s of requests
    that were already in flight when the first one came back describe the same overload and
    count once. A 429 with ``Retry-After`` pauses the rate limiters instead (the server said how
    long), without shrinking the pipe.
    """

    def __init__(self, maximum: int, minimum: int = 1, *, cooldown: float = 1.0) -> None:
        if minimum > maximum:
            raise ValueError(f"minimum ({minimum}) must be <= maximum ({maximum})")
        self.maximum = maximum
        self.minimum = minimum
        self.cooldown = cooldown
        self._lock = threading.Lock()
        self._limit = maximum
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


class BatchState(Generic[T]):
    """The state one batch shares between its workers. Thread-safe.

    Args:
        keep_values: keep values for :attr:`BatchResult.values` (off for the streaming forms).
        max_concurrency: the user's bound on requests in flight.
        base_url: where requests go, named in :class:`ServerUnreachable`.
        limiters: rate limiters of this batch (besides the client's own).
        operation: what the batch does, for its log lines (``"embed_batch"``...).
    """

    def __init__(
        self,
        *,
        keep_values: bool,
        max_concurrency: int,
        base_url: str,
        limiters: tuple[Any, ...] = (),
        operation: str = "batch",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accountant: BatchAccountant[T] = BatchAccountant(keep_values=keep_values)
        self.adaptive = AdaptiveLimit(max_concurrency)
        self.base_url = base_url
        self.limiters = limiters
        self.operation = operation
        self._clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._ending: BaseException | None = None
        self._stopped_by: ItemFailure | None = None
        self._proven = False
        self._probed = False
        self._connect_failures = 0
        self._connect_retried = False

    # -- the batch's side of each call (CallSink) ----------------------------------------

    def sent(self) -> None:
        if self._ending is not None:
            raise BatchEnded
        self.accountant.count(requests=1)

    def refused(self, error: BaseException) -> None:
        # An error every request would meet ends the batch before the next one takes the slot.
        if ends_batch(error):
            self.end(error)

    def succeeded(self) -> None:
        self._proven = True
        self.adaptive.on_success()

    def proved(self) -> None:
        """A request of the batch succeeded: the request itself (model, parameters) is valid."""
        self._proven = True

    def failed(self, error: BaseException, decision: Decision, attempt: int) -> None:
        verdict = decision.classification
        if decision.action is Action.RETRY:
            self.accountant.count(
                retries=1, rate_limited=int(verdict.rate_limited), timeouts=int(verdict.timeout)
            )
            if verdict.rate_limited and verdict.retry_after is None:
                self.adaptive.on_rate_limited(self._clock())
        if is_connect_failure(error) and not self._proven:
            with self._lock:
                self._connect_failures += 1
                self._connect_retried |= attempt >= 2
                dead = (
                    self._connect_failures >= CONNECT_FAILURES_TO_GIVE_UP and self._connect_retried
                )
            if dead:
                self.end(self._unreachable(error))
        ending = self._ending
        if ending is not None and decision.action is Action.RETRY:
            # The batch is over: no more attempts on its behalf.
            if isinstance(ending, ServerUnreachable):
                raise self._unreachable(error) from error
            raise error

    def _unreachable(self, error: BaseException) -> ServerUnreachable:
        detail = connection_cause(error) or ""
        return ServerUnreachable(
            self.base_url, attempts=self._connect_failures, detail=detail[:200]
        )

    # -- ending early --------------------------------------------------------------------

    def end(self, error: BaseException) -> None:
        """End the batch: nothing more is sent; items not sent fail with ``error``."""
        with self._lock:
            if self._ending is not None:
                return
            self._ending = error
        logger.warning(
            "%s stopped: %s; the items not sent yet fail with this error",
            self.operation,
            describe(error),
        )

    @property
    def ended(self) -> bool:
        """Whether the batch was ended early."""
        return self._ending is not None

    @property
    def ending_error(self) -> BaseException | None:
        return self._ending

    @property
    def proven(self) -> bool:
        """Whether a request of this batch succeeded: the request itself is then valid."""
        return self._proven

    def should_probe(self) -> bool:
        """Whether a rejected request needs the probe (once per batch, before any success)."""
        with self._lock:
            if self._proven or self._probed:
                return False
            self._probed = True
            return True

    # -- outcomes ------------------------------------------------------------------------

    def succeed(self, index: int, value: T) -> Outcome:
        self.accountant.success(index, value)
        return (index, value)

    def fail(
        self,
        index: int,
        error: BaseException,
        *,
        attempts: int,
        item: object,
        not_sent: bool = False,
    ) -> Outcome:
        """Record one input's failure; an error every request would meet ends the batch."""
        if ends_batch(error):
            self.end(error)
        record = self.accountant.failure(
            index, error, attempts=attempts, item=item, not_sent=not_sent
        )
        if self._stopped_by is None and (
            error is self._ending or isinstance(error, ServerUnreachable)
        ):
            self._stopped_by = record
        return (index, record)

    def fail_one(self, index: int, error: BaseException, *, attempts: int, item: object) -> Outcome:
        """One input's request failed for good: one WARNING, then the record.

        A request that never went out (its deadline came before its turn, say) is ``not_sent``:
        nothing is known to be wrong with the input.
        """
        if isinstance(error, InvalidInput):
            return self.fail(index, error, attempts=attempts, item=item)
        if attempts > 0:
            logger.warning(
                "%s: request for item %d failed after %d attempt(s): %s",
                self.operation,
                index,
                attempts,
                describe(error),
            )
        return self.fail(index, error, attempts=attempts, item=item, not_sent=attempts == 0)

    def fail_request(
        self, request: PlannedRequest, error: BaseException, *, attempts: int
    ) -> list[Outcome]:
        """Every input of a request that failed for good: one WARNING for the request."""
        first, last = request.items[0].index, request.items[-1].index
        where = f"item {first}" if first == last else f"{len(request)} items ({first}..{last})"
        logger.warning(
            "%s: request for %s failed after %d attempt(s): %s",
            self.operation,
            where,
            attempts,
            describe(error),
        )
        return [
            self.fail(item.index, error, attempts=attempts, item=item.text, not_sent=attempts == 0)
            for item in request.items
        ]

    def fail_unsent(self, indices_items: list[tuple[int, object]]) -> list[Outcome]:
        """Inputs never sent because the batch ended: they fail with its error, attempts 0."""
        error = self._ending
        assert error is not None
        return [
            self.fail(index, error, attempts=0, item=item, not_sent=True)
            for index, item in indices_items
        ]

    def reject(self, index: int, error: InvalidInput, raw: object) -> Outcome:
        """An input that failed its checks: recorded as failed, never sent."""
        return self.fail(index, error, attempts=0, item=raw)

    def add_usage(self, prompt_tokens: int, total_tokens: int) -> None:
        if prompt_tokens or total_tokens:
            self.accountant.count(prompt_tokens=prompt_tokens, total_tokens=total_tokens)

    def limit_size(self, size: int) -> None:
        """The server accepts at most ``size`` inputs per request: keep to it from now on.

        Logged once per batch (later refinements at DEBUG); the batch's summary line and
        ``stats.size_limit`` give the limit it settled on.
        """
        first = self.accountant.size_limit is None
        if self.accountant.limit_size(size):
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "%s: the server refused a request for its size; sending at most %d inputs per "
                "request from now on",
                self.operation,
                size,
            )

    @property
    def size_limit(self) -> int | None:
        return self.accountant.size_limit

    def elapsed(self) -> float:
        return self._clock() - self.started

    def result(self) -> BatchResult[T]:
        result = self.accountant.result(self.elapsed(), self._stopped_by)
        stats = result.stats
        level = logging.INFO if result.ok else logging.WARNING
        size = "" if stats.size_limit is None else f"; size limit found: {stats.size_limit}"
        logger.log(
            level,
            "%s: %d items, %d succeeded, %d failed (%d not sent), %d requests, %d retries "
            "in %.2f s%s",
            self.operation,
            stats.total,
            stats.succeeded,
            stats.failed,
            stats.not_sent,
            stats.requests,
            stats.retries,
            stats.elapsed,
            size,
        )
        return result
