"""The accountant: every input of a batch recorded exactly once, as a value or a failure."""

from __future__ import annotations

import logging
import threading
from typing import Generic, TypeVar

from .results import BatchResult, BatchStats, ItemFailure, clip, preview, status_of

__all__ = ["BatchAccountant"]

logger = logging.getLogger("resilient_llm")

T = TypeVar("T")


class BatchAccountant(Generic[T]):
    """Records the outcome of every input exactly once; thread-safe.

    The batch calls :meth:`expect` as it reads inputs, then :meth:`success` or :meth:`failure`
    once per index, and the ``count_*`` methods as things happen. Recording an index twice, or
    one never expected, raises ``RuntimeError`` at once; :meth:`result` raises ``RuntimeError``
    if an expected index was never recorded. Those are bugs of the library, never of the input.

    Memory: with ``keep_values=False`` (the streaming forms) nothing grows with the number of
    inputs but the failure records: recorded indices are tracked as a watermark below which all
    are done plus the set of those done out of order above it, which stays about as large as the
    number of inputs in flight.

    Per-item failures are logged at DEBUG: the batch logs one WARNING per failed request.

    Args:
        keep_values: keep each value for :attr:`BatchResult.values`.
    """

    def __init__(self, *, keep_values: bool = True) -> None:
        self._lock = threading.Lock()
        self._keep_values = keep_values
        self._values: list[T | None] = []
        self._failures: list[ItemFailure] = []
        self._total = 0
        self._done_below = 0
        self._done_above: set[int] = set()
        self._counts = dict.fromkeys(
            (
                "succeeded",
                "failed",
                "not_sent",
                "requests",
                "retries",
                "rate_limited",
                "timeouts",
                "bisections",
                "prompt_tokens",
                "total_tokens",
            ),
            0,
        )
        self._size_limit: int | None = None
        # A request that fails as a whole fails up to 2048 items with one exception: format
        # its traceback once and share the strings between their records.
        self._last_error: tuple[BaseException, str, str] | None = None

    @property
    def keep_values(self) -> bool:
        """Whether values are kept."""
        return self._keep_values

    @property
    def total(self) -> int:
        """Inputs expected so far."""
        return self._total

    @property
    def done(self) -> int:
        """Inputs recorded so far (succeeded or failed)."""
        return self._counts["succeeded"] + self._counts["failed"]

    @property
    def succeeded_count(self) -> int:
        return self._counts["succeeded"]

    @property
    def failed_count(self) -> int:
        return self._counts["failed"]

    def expect(self, n: int = 1) -> int:
        """Declare ``n`` more inputs (read from the iterable); returns the first new index."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"expect() takes an int >= 0, got {n!r}")
        with self._lock:
            first = self._total
            self._total += n
            if self._keep_values:
                self._values.extend([None] * n)
            return first

    def _mark(self, index: int) -> None:
        # Caller holds the lock.
        if isinstance(index, bool) or not isinstance(index, int):
            raise RuntimeError(f"batch accounting: index must be an int, got {index!r}")
        if not 0 <= index < self._total:
            raise RuntimeError(
                f"batch accounting: index {index} was never expected (total {self._total})"
            )
        if index < self._done_below or index in self._done_above:
            raise RuntimeError(f"batch accounting: index {index} recorded twice")
        if index == self._done_below:
            self._done_below += 1
            while self._done_below in self._done_above:
                self._done_above.remove(self._done_below)
                self._done_below += 1
        else:
            self._done_above.add(index)

    def success(self, index: int, value: T) -> None:
        """Record the value of input ``index``.

        Raises:
            RuntimeError: ``index`` was already recorded or never expected.
        """
        with self._lock:
            self._mark(index)
            self._counts["succeeded"] += 1
            if self._keep_values:
                self._values[index] = value

    def failure(
        self, index: int, exc: BaseException, *, attempts: int, item: object, not_sent: bool = False
    ) -> ItemFailure:
        """Record that input ``index`` failed with ``exc``; returns its :class:`ItemFailure`.

        Args:
            index: the input's index.
            exc: the error.
            attempts: attempts made for this item (0 if never sent).
            item: the raw input (or an object with a ``text``), for the preview.
            not_sent: never sent because the batch ended early (counted as not sent).

        Raises:
            RuntimeError: ``index`` was already recorded or never expected.
        """
        last = self._last_error
        if last is not None and last[0] is exc:
            record = ItemFailure(
                index=index,
                error_type=type(exc).__name__,
                message=last[1],
                status=status_of(exc),
                attempts=attempts,
                traceback=last[2],
                preview=preview(item),
                not_sent=not_sent,
            )
        else:
            record = ItemFailure.from_exception(
                index, exc, attempts=attempts, item=item, not_sent=not_sent
            )
            self._last_error = (exc, record.message, record.traceback)
        with self._lock:
            self._mark(index)
            self._counts["failed"] += 1
            self._counts["not_sent"] += not_sent
            self._failures.append(record)
        logger.debug(
            "batch item %d failed after %d attempt(s): %s: %s",
            index,
            attempts,
            record.error_type,
            clip(record.message, 200),
        )
        return record

    def count(self, **increments: int) -> None:
        """Add to the counters (``requests``, ``retries``, ``rate_limited``, ``timeouts``,
        ``bisections``, ``prompt_tokens``, ``total_tokens``)."""
        with self._lock:
            for name, value in increments.items():
                if name in ("succeeded", "failed", "not_sent") or name not in self._counts:
                    raise ValueError(f"cannot count {name!r}")
                self._counts[name] += value

    def limit_size(self, size: int) -> bool:
        """Note that the server accepts at most ``size`` inputs per request; True if smaller."""
        with self._lock:
            if self._size_limit is not None and self._size_limit <= size:
                return False
            self._size_limit = size
            return True

    @property
    def size_limit(self) -> int | None:
        return self._size_limit

    def stats(self, elapsed: float) -> BatchStats:
        """The counts so far."""
        with self._lock:
            return BatchStats(
                total=self._total, elapsed=elapsed, size_limit=self._size_limit, **self._counts
            )

    def missing(self, limit: int = 10) -> list[int]:
        """Up to ``limit`` expected indices not recorded yet, lowest first."""
        with self._lock:
            out: list[int] = []
            index = self._done_below
            while index < self._total and len(out) < limit:
                if index not in self._done_above:
                    out.append(index)
                index += 1
            return out

    def result(self, elapsed: float, stopped_by: ItemFailure | None = None) -> BatchResult[T]:
        """The batch's result, once every expected input is recorded.

        Raises:
            RuntimeError: some expected index was never recorded (a library bug).
        """
        with self._lock:
            complete = self._done_below == self._total and not self._done_above
            consistent = self._counts["succeeded"] + self._counts["failed"] == self._total
            if complete and consistent:
                failures = sorted(self._failures, key=lambda failure: failure.index)
                values = list(self._values) if self._keep_values else []
                stats = BatchStats(
                    total=self._total, elapsed=elapsed, size_limit=self._size_limit, **self._counts
                )
                return BatchResult(values, failures, stats, stopped_by)
        missing = self.missing()
        raise RuntimeError(
            f"batch accounting: {self._total - self.done} of {self._total} inputs were never "
            f"recorded (first: {missing})"
        )
