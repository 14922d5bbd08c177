"""The I/O-free core of batch operations: input checks, request planning, bisection, accounting.

The sync and async clients only wait and do I/O; every decision they take about a batch is made
here, so both behave the same.

Flow of one batch::

    raw input ──prepare_item──▶ Item ──RequestPlanner──▶ PlannedRequest ──(shell sends)──▶
        success ─▶ BatchAccountant.success(index, value)
        failure ─▶ BatchAccountant.failure(index, exc, ...)        (every index exactly once)
    BatchAccountant.result(elapsed) ─▶ BatchResult

Bisection of rejected requests
------------------------------
A request that the server rejects as invalid (HTTP 400 or 422, :func:`is_input_rejection`) may be
rejected because of one bad input among many. The shell then isolates it:

1. A rejected request of one item: that item fails with the server's error.
2. A rejected request of ``n > 1`` items is split by :meth:`PlannedRequest.halves` and both halves
   are sent (one :meth:`BatchAccountant.count_bisection`).
3. :func:`bisect_outcome` judges the two answers:

   - both halves rejected *alike* (:func:`both_alike`: same :func:`error_signature`, and the error
     does not point at a particular input): the error names no input (unknown model, unknown
     parameter, bad auth), so splitting further would only multiply requests. Every item of the
     parent request fails with that error;
   - otherwise each half is handled on its own: a success records its items; a rejected half goes
     back to step 1 or 2; any other error (after retries) fails that half's items.

One bad input among ``n`` costs at most :func:`bisection_request_bound` requests
(``1 + 2 * ceil(log2 n)``); ``k`` bad inputs never cost more than ``2n - 1``.
"""

from __future__ import annotations

import itertools
import logging
import re
import reprlib
import threading
import traceback as traceback_module
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar, cast

from ._exceptions import BatchFailed, InvalidInput
from ._tokens import TokenCounter

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_REQUEST_TOKENS",
    "BatchAccountant",
    "BatchResult",
    "BatchStats",
    "BisectionOutcome",
    "Item",
    "ItemFailure",
    "PlannedRequest",
    "RequestPlanner",
    "TooLong",
    "bisect_outcome",
    "bisection_request_bound",
    "both_alike",
    "error_signature",
    "is_input_rejection",
    "prepare_item",
    "preview",
    "text_chunks",
    "validate_batch_size",
    "validate_positive_int",
    "validate_too_long",
]

logger = logging.getLogger("resilient_llm")

T = TypeVar("T")

TooLong = Literal["fail", "truncate"]

#: The embeddings endpoint accepts at most this many inputs per request.
MAX_BATCH_SIZE = 2048
#: The embeddings endpoint accepts at most this many tokens per request, all inputs together.
MAX_REQUEST_TOKENS = 300_000

PREVIEW_CHARS = 80
# Failure records are kept for every failed item, even in streaming mode: bound each one.
_MAX_MESSAGE_CHARS = 2_000
_MAX_TRACEBACK_CHARS = 16_000

_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{8,})|(Bearer\s+)[A-Za-z0-9._\-~+/]{8,}=*")


def _redact(text: str) -> str:
    """Hide API keys: failure records and logs end up in files and terminals."""
    return _SECRET.sub(lambda m: "sk-***" if m.group(1) else f"{m.group(2)}***", text)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 6
_repr.maxlevel = 3


def preview(obj: object, limit: int = PREVIEW_CHARS) -> str:
    """A short, single-line, printable preview of an input, safe on a 10 MB string.

    Strings show their first ``limit`` characters (control characters and lone surrogates
    escaped) and, when cut, their full length; anything else shows a bounded ``repr``.
    """
    if isinstance(obj, Item):
        obj = obj.text
    if isinstance(obj, str):
        head = repr(obj[:limit])[1:-1]
        return head if len(obj) <= limit else f"{head}… ({len(obj)} chars)"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj[:limit])
        text = repr(data)
        return text if len(obj) <= limit else f"{text}… ({len(obj)} bytes)"
    try:
        text = _repr.repr(obj)
    except Exception:
        return f"<{type(obj).__name__} object; repr() failed>"
    return _clip(text.replace("\n", "\\n"), limit)


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why one input of a batch failed.

    Attributes:
        index: position of the input in the batch (0-based).
        error_type: class name of the error, for example ``"BadRequestError"``.
        message: the error's message (API keys redacted, clipped to 2,000 characters).
        status: the HTTP status when the error has one.
        attempts: how many attempts were made for this item (0 if it was never sent).
        traceback: the formatted traceback of the error.
        preview: the first characters of the input.
    """

    index: int
    error_type: str
    message: str
    status: int | None
    attempts: int
    traceback: str = field(repr=False)
    preview: str

    @classmethod
    def from_exception(
        cls, index: int, exc: BaseException, *, attempts: int, item: object
    ) -> ItemFailure:
        """The record of ``item`` (the raw input or its :class:`Item`) failing with ``exc``."""
        status = getattr(exc, "status_code", None)
        return cls(
            index=index,
            error_type=type(exc).__name__,
            message=_clip(_redact(str(exc)), _MAX_MESSAGE_CHARS),
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            attempts=attempts,
            traceback=_format_traceback(exc),
            preview=preview(item),
        )

    def as_dict(self) -> dict[str, object]:
        """The record as plain JSON-serialisable values (for ``*.failures.jsonl``)."""
        return {
            "index": self.index,
            "error_type": self.error_type,
            "message": self.message,
            "status": self.status,
            "attempts": self.attempts,
            "traceback": self.traceback,
            "preview": self.preview,
        }


def _format_traceback(exc: BaseException) -> str:
    text = "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
    return _clip(_redact(text), _MAX_TRACEBACK_CHARS)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counts of one batch.

    Attributes:
        total: inputs read.
        succeeded: inputs with a value.
        failed: inputs with an :class:`ItemFailure`.
        requests: HTTP requests sent (retries and bisection halves included).
        retries: attempts that were retried.
        rate_limited: retries caused by HTTP 429.
        timeouts: retries caused by a timeout.
        bisections: rejected requests split in halves.
        prompt_tokens: prompt tokens reported by the server.
        total_tokens: total tokens reported by the server.
        elapsed: wall-clock seconds of the batch.
    """

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    bisections: int = 0
    prompt_tokens: int = 0
    total_tokens: int = 0
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        """Succeeded items per second (0.0 before any time has passed)."""
        return self.succeeded / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """The outcome of a batch: one slot per input, in input order.

    Attributes:
        values: the value of each input, ``None`` where it failed (empty when the batch was
            run without keeping values, as the streaming forms do).
        failures: one record per failed input, sorted by index.
        stats: the batch's counts.
    """

    values: list[T | None]
    failures: list[ItemFailure]
    stats: BatchStats

    @property
    def ok(self) -> bool:
        """``True`` when no input failed."""
        return not self.failures

    def raise_for_failures(self) -> BatchResult[T]:
        """Return ``self`` when every input succeeded.

        Raises:
            BatchFailed: at least one input failed; ``.result`` is this result.
        """
        if self.failures:
            raise BatchFailed(self)
        return self

    def succeeded(self) -> Iterator[tuple[int, T]]:
        """``(index, value)`` of each input that succeeded, in input order.

        Decided by the failures, not by ``None``: a ``map`` function may legitimately return
        ``None``.
        """
        failed = {failure.index for failure in self.failures}
        for index, value in enumerate(self.values):
            if index not in failed:
                yield index, cast(T, value)

    def __len__(self) -> int:
        """The number of inputs (also when values were not kept)."""
        return self.stats.total

    def summary(self, max_failures: int = 5) -> str:
        """A few human-readable lines: counts, then the first failures."""
        s = self.stats
        lines = [
            f"{s.total} items: {s.succeeded} succeeded, {s.failed} failed in {s.elapsed:.2f} s "
            f"({s.throughput:.1f} items/s)",
            f"{s.requests} requests, {s.retries} retries ({s.rate_limited} rate-limited, "
            f"{s.timeouts} timeouts), {s.bisections} bisections, "
            f"{s.prompt_tokens} prompt tokens, {s.total_tokens} total tokens",
        ]
        for failure in self.failures[:max_failures]:
            status = f" (HTTP {failure.status})" if failure.status is not None else ""
            message = _clip(failure.message, 200)
            lines.append(
                f"  item {failure.index}: {failure.error_type}{status}: {message} "
                f"[input: {failure.preview}]"
            )
        if len(self.failures) > max_failures:
            lines.append(f"  … and {len(self.failures) - max_failures} more failures")
        return "\n".join(lines)

    def __repr__(self) -> str:
        s = self.stats
        first = ""
        if self.failures:
            f = self.failures[0]
            first = f", first_failure=(item {f.index}: {f.error_type}: {_clip(f.message, 80)!r})"
        return (
            f"BatchResult(total={s.total}, succeeded={s.succeeded}, failed={s.failed}, "
            f"requests={s.requests}, retries={s.retries}, elapsed={s.elapsed:.2f}s{first})"
        )


# --- accounting ------------------------------------------------------------------------------


class BatchAccountant(Generic[T]):
    """Records the outcome of every input exactly once; thread-safe.

    The shell calls :meth:`expect` as it reads inputs, then :meth:`success` or :meth:`failure`
    once per index, and the ``count_*`` methods as things happen. Recording an index twice, or
    one never expected, raises ``RuntimeError`` at once; :meth:`result` raises ``RuntimeError``
    if an expected index was never recorded. Those are bugs of the library, never of the input.

    Memory: with ``keep_values=False`` (the streaming forms) nothing grows with the number of
    inputs but the failure records: recorded indices are tracked as a watermark below which all
    are done plus the set of those done out of order above it, which stays about as large as the
    number of inputs in flight.

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
        self._succeeded = 0
        self._failed = 0
        self._requests = 0
        self._retries = 0
        self._rate_limited = 0
        self._timeouts = 0
        self._bisections = 0
        self._prompt_tokens = 0
        self._total_tokens = 0
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
        return self._succeeded + self._failed

    @property
    def succeeded_count(self) -> int:
        """Inputs recorded as succeeded so far."""
        return self._succeeded

    @property
    def failed_count(self) -> int:
        """Inputs recorded as failed so far."""
        return self._failed

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

    def _mark(self, index: int) -> int:
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
        return self._succeeded + self._failed + 1

    def success(self, index: int, value: T) -> int:
        """Record the value of input ``index``; returns the number of inputs done.

        Raises:
            RuntimeError: ``index`` was already recorded or never expected.
        """
        with self._lock:
            done = self._mark(index)
            self._succeeded += 1
            if self._keep_values:
                self._values[index] = value
            return done

    def failure(
        self, index: int, exc: BaseException, *, attempts: int, item: object
    ) -> ItemFailure:
        """Record that input ``index`` failed with ``exc``; returns its :class:`ItemFailure`.

        Logs a WARNING on the ``resilient_llm`` logger naming the index, with the traceback the
        first time a given exception is recorded (a request failing as a whole fails all its
        items with one exception: one traceback in the log is enough).

        Args:
            index: the input's index.
            exc: the error.
            attempts: attempts made for this item (0 if never sent).
            item: the raw input or its :class:`Item`, for the preview.

        Raises:
            RuntimeError: ``index`` was already recorded or never expected.
        """
        last = self._last_error
        if last is not None and last[0] is exc:
            repeated = True
            message, formatted = last[1], last[2]
            record = ItemFailure(
                index=index,
                error_type=type(exc).__name__,
                message=message,
                status=_status_of(exc),
                attempts=attempts,
                traceback=formatted,
                preview=preview(item),
            )
        else:
            repeated = False
            record = ItemFailure.from_exception(index, exc, attempts=attempts, item=item)
            self._last_error = (exc, record.message, record.traceback)
        with self._lock:
            self._mark(index)
            self._failed += 1
            self._failures.append(record)
        if repeated:
            logger.warning(
                "batch item %d failed: %s: %s (same error as the previous item)",
                index,
                record.error_type,
                _clip(record.message, 200),
            )
        else:
            # The record's traceback text, not exc_info: it is redacted, in case a server echoed
            # the API key back in an error message.
            logger.warning(
                "batch item %d failed after %d attempt(s): %s: %s\n%s",
                index,
                attempts,
                record.error_type,
                _clip(record.message, 200),
                record.traceback,
            )
        return record

    def count_request(self, n: int = 1) -> None:
        """Count ``n`` HTTP requests sent."""
        with self._lock:
            self._requests += n

    def count_retry(self, *, rate_limited: bool = False, timeout: bool = False) -> None:
        """Count one retried attempt, and whether a 429 or a timeout caused it."""
        with self._lock:
            self._retries += 1
            self._rate_limited += bool(rate_limited)
            self._timeouts += bool(timeout)

    def count_bisection(self) -> None:
        """Count one rejected request split in halves."""
        with self._lock:
            self._bisections += 1

    def add_usage(self, prompt_tokens: int | None, total_tokens: int | None) -> None:
        """Add the ``usage`` the server reported (``None`` when it reported none)."""
        with self._lock:
            self._prompt_tokens += prompt_tokens or 0
            self._total_tokens += total_tokens or 0

    def stats(self, elapsed: float) -> BatchStats:
        """The counts so far (for progress displays)."""
        with self._lock:
            return self._stats(elapsed)

    def _stats(self, elapsed: float) -> BatchStats:
        return BatchStats(
            total=self._total,
            succeeded=self._succeeded,
            failed=self._failed,
            requests=self._requests,
            retries=self._retries,
            rate_limited=self._rate_limited,
            timeouts=self._timeouts,
            bisections=self._bisections,
            prompt_tokens=self._prompt_tokens,
            total_tokens=self._total_tokens,
            elapsed=elapsed,
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

    def result(self, elapsed: float) -> BatchResult[T]:
        """The batch's result, once every expected input is recorded.

        Raises:
            RuntimeError: some expected index was never recorded (a library bug).
        """
        with self._lock:
            complete = self._done_below == self._total and not self._done_above
            consistent = self._succeeded + self._failed == self._total
            if complete and consistent:
                failures = sorted(self._failures, key=lambda failure: failure.index)
                values = list(self._values) if self._keep_values else []
                return BatchResult(values=values, failures=failures, stats=self._stats(elapsed))
        missing = self.missing()
        raise RuntimeError(
            f"batch accounting: {self._total - self.done} of {self._total} inputs were never "
            f"recorded (first: {missing})"
        )


def _status_of(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


# --- input preparation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """An input checked and counted, ready to be planned into a request.

    Attributes:
        index: its position in the batch.
        text: the text to send (cut to the limit when ``too_long="truncate"``).
        tokens: its token count per the counter used.
    """

    index: int
    text: str
    tokens: int

    def __repr__(self) -> str:
        return f"Item(index={self.index}, tokens={self.tokens}, text={preview(self.text, 40)!r})"


def validate_too_long(value: object) -> TooLong:
    """Check the ``too_long`` option.

    Raises:
        ValueError: it is not ``"fail"`` or ``"truncate"``.
    """
    if isinstance(value, str) and value in ("fail", "truncate"):
        return cast(TooLong, value)
    raise ValueError(f"too_long must be 'fail' or 'truncate', got {value!r}")


def validate_batch_size(value: object, name: str = "batch_size") -> int:
    """Check a number of inputs per request: an int from 1 to 2048.

    Raises:
        TypeError: it is not an int.
        ValueError: it is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValueError(f"{name} must be between 1 and {MAX_BATCH_SIZE}, got {value}")
    return value


def validate_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def prepare_item(
    index: int,
    raw: object,
    *,
    counter: TokenCounter,
    max_item_tokens: int,
    too_long: TooLong = "fail",
) -> Item:
    """Check one input and count its tokens, so that bad input never reaches the network.

    Args:
        index: the input's position, named in error messages.
        raw: the input as the user gave it.
        counter: the token counter of the model.
        max_item_tokens: the model's per-input limit (8,191 for the embedding models).
        too_long: ``"fail"`` the item, or ``"truncate"`` it to ``max_item_tokens``.

    Raises:
        InvalidInput: not a ``str``; empty or whitespace-only; not encodable as UTF-8 (lone
            surrogates); over ``max_item_tokens`` with ``too_long="fail"``.
        ValueError: ``too_long`` or ``max_item_tokens`` is invalid.
    """
    mode = validate_too_long(too_long)
    validate_positive_int(max_item_tokens, "max_item_tokens")
    if not isinstance(raw, str):
        kind = type(raw).__name__
        if isinstance(raw, (bytes, bytearray, memoryview)):
            raise InvalidInput(
                f"item {index}: expected str, got {kind}; decode it first "
                f"(for example data.decode('utf-8'))"
            )
        raise InvalidInput(f"item {index}: expected str, got {kind}")
    if not raw:
        raise InvalidInput(f"item {index}: empty string")
    if raw.isspace():
        raise InvalidInput(f"item {index}: whitespace-only string ({len(raw)} characters)")
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"item {index}: cannot be encoded as UTF-8: lone surrogate "
                f"U+{ord(raw[exc.start]):04X} at position {exc.start}"
            ) from exc
    tokens = counter.count(raw)
    if tokens <= max_item_tokens:
        return Item(index, raw, tokens)
    if mode == "fail":
        how = "" if counter.exact else " (estimated: tiktoken unavailable)"
        raise InvalidInput(
            f"item {index}: {tokens} tokens{how}, over the limit of {max_item_tokens} tokens "
            f"per input (too_long='fail'; pass too_long='truncate' to cut it)"
        )
    text = counter.truncate(raw, max_item_tokens)
    return Item(index, text, counter.count(text))


# --- request planning ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """Inputs to send in one request.

    Attributes:
        items: the inputs, in input order.
        tokens: their token count together.
    """

    items: tuple[Item, ...]
    tokens: int

    @classmethod
    def of(cls, items: Sequence[Item]) -> PlannedRequest:
        """A request of ``items`` with their tokens summed."""
        return cls(tuple(items), sum(item.tokens for item in items))

    @property
    def texts(self) -> list[str]:
        """The texts, as the API's ``input`` list."""
        return [item.text for item in self.items]

    @property
    def indices(self) -> list[int]:
        """The batch indices of the inputs."""
        return [item.index for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def halves(self) -> tuple[PlannedRequest, PlannedRequest]:
        """Split in two for bisection; the first half is the shorter when ``len`` is odd.

        Raises:
            ValueError: the request has fewer than two items.
        """
        if len(self.items) < 2:
            raise ValueError("a request of fewer than 2 items cannot be split")
        middle = len(self.items) // 2
        return PlannedRequest.of(self.items[:middle]), PlannedRequest.of(self.items[middle:])

    def __repr__(self) -> str:
        first = self.items[0].index if self.items else None
        last = self.items[-1].index if self.items else None
        return (
            f"PlannedRequest(items={len(self.items)}, indices={first}..{last}, "
            f"tokens={self.tokens})"
        )


class RequestPlanner:
    """Groups prepared inputs, in order, into requests within both API limits.

    A request holds at most ``batch_size`` inputs and at most ``max_request_tokens`` tokens.
    An input larger than ``max_request_tokens`` on its own goes alone in a request.
    Not thread-safe: one reader of the input feeds it.

    Args:
        batch_size: inputs per request, 1 to 2048.
        max_request_tokens: tokens per request.

    Raises:
        TypeError, ValueError: an argument is invalid (the message names it).
    """

    def __init__(
        self, batch_size: int = MAX_BATCH_SIZE, max_request_tokens: int = MAX_REQUEST_TOKENS
    ) -> None:
        self.batch_size = validate_batch_size(batch_size)
        self.max_request_tokens = validate_positive_int(max_request_tokens, "max_request_tokens")
        self._items: list[Item] = []
        self._tokens = 0

    @property
    def pending(self) -> int:
        """Inputs added but not yet returned in a request."""
        return len(self._items)

    def add(self, item: Item) -> PlannedRequest | None:
        """Add the next input; returns a request when one is complete."""
        out = None
        if self._items and self._tokens + item.tokens > self.max_request_tokens:
            out = self._take()
        self._items.append(item)
        self._tokens += item.tokens
        full = len(self._items) >= self.batch_size or self._tokens >= self.max_request_tokens
        if full and out is None:
            out = self._take()
        # Otherwise the new item (alone, so at most batch_size) waits: any next item overflows
        # it and sends it, and so does flush().
        return out

    def flush(self) -> PlannedRequest | None:
        """The last, partial request, if any inputs are pending."""
        return self._take() if self._items else None

    def _take(self) -> PlannedRequest:
        request = PlannedRequest(tuple(self._items), self._tokens)
        self._items = []
        self._tokens = 0
        return request


# --- bisection -------------------------------------------------------------------------------

_INPUT_REJECTION_STATUSES = frozenset({400, 422})
# Ids that differ between two requests failing for the same reason.
_VOLATILE = re.compile(
    r"\breq_[0-9a-zA-Z]+|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b[0-9a-f]{24,}\b",
    re.IGNORECASE,
)
_NAMES_AN_INPUT = re.compile(
    r"\binput\s*\[\s*\d+\s*\]|\bindex\s*\d+|\binputs?\s+\d+", re.IGNORECASE
)


def is_input_rejection(exc: object) -> bool:
    """Whether the server rejected the request as invalid (HTTP 400 or 422)."""
    return _status_of(exc) in _INPUT_REJECTION_STATUSES


def error_signature(exc: object) -> tuple[int | None, str | None, str | None, str | None, str]:
    """What identifies an error across requests: status, code, type, param, message.

    The message is normalised (case, whitespace, request ids) but numbers are kept: a token
    count or an input index in the message tells two different bad inputs apart.
    """
    # openai's .message wraps the body's repr ("Error code: 400 - {...}"): prefer the server's
    # own message from the body.
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str):
        message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    normalised = " ".join(_VOLATILE.sub("<id>", message).lower().split())

    def text_attr(name: str) -> str | None:
        value = getattr(exc, name, None)
        return None if value is None else str(value)

    return (_status_of(exc), text_attr("code"), text_attr("type"), text_attr("param"), normalised)


def _names_an_input(exc: object) -> bool:
    param = getattr(exc, "param", None)
    if isinstance(param, str) and param.startswith(("input[", "messages[")):
        return True
    return bool(_NAMES_AN_INPUT.search(error_signature(exc)[4]))


def both_alike(left_exc: object, right_exc: object) -> bool:
    """Whether two halves were rejected for one reason that names no input.

    Then the error is about the request itself (model, parameters, auth) and splitting further
    cannot isolate anything.
    """
    return (
        is_input_rejection(left_exc)
        and is_input_rejection(right_exc)
        and error_signature(left_exc) == error_signature(right_exc)
        and not _names_an_input(left_exc)
    )


@dataclass(frozen=True, slots=True)
class BisectionOutcome:
    """What to do once both halves of a rejected request have answered.

    Attributes:
        fail_all: both halves were rejected alike: fail every item of the parent request with
            this error and stop.
        split: rejected halves of more than one item, to split again.
        fail: halves whose items fail with the paired error (a rejected single item, or an
            error that bisection cannot help with).
    """

    fail_all: BaseException | None = None
    split: tuple[PlannedRequest, ...] = ()
    fail: tuple[tuple[PlannedRequest, BaseException], ...] = ()


def bisect_outcome(
    left: PlannedRequest,
    left_error: BaseException | None,
    right: PlannedRequest,
    right_error: BaseException | None,
) -> BisectionOutcome:
    """Judge the answers to the two halves of a rejected request (``None``: it succeeded).

    Halves that succeeded need nothing from this: the shell records their values.
    """
    if left_error is not None and right_error is not None and both_alike(left_error, right_error):
        return BisectionOutcome(fail_all=left_error)
    split: list[PlannedRequest] = []
    fail: list[tuple[PlannedRequest, BaseException]] = []
    for half, error in ((left, left_error), (right, right_error)):
        if error is None:
            continue
        if is_input_rejection(error) and len(half) > 1:
            split.append(half)
        else:
            fail.append((half, error))
    return BisectionOutcome(split=tuple(split), fail=tuple(fail))


def bisection_request_bound(n: int) -> int:
    """Worst-case requests to isolate one bad input among ``n``, the first request included.

    Each level sends both halves and goes down the rejected one: ``1 + 2 * ceil(log2 n)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # (n - 1).bit_length() is ceil(log2 n), without floating point.
    return 1 + 2 * (n - 1).bit_length()


# --- chunking long texts for map-reduce summaries --------------------------------------------

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[\u3002\uff01\uff1f])\s*|\n\s*")
_WHITESPACE = re.compile(r"\s+")
_SPLITTERS = (_PARAGRAPH, _SENTENCE, _WHITESPACE)
# Every code point is at most 4 UTF-8 bytes, hence at most 4 tokens: the smallest limit for
# which every character fits in a chunk.
_MIN_CHUNK_TOKENS = 4


def text_chunks(text: str, *, max_tokens: int, counter: TokenCounter) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens, for map-reduce summaries.

    Splits on paragraph breaks, then sentence ends, then whitespace, and cuts inside a word only
    when one word alone is over the limit. Chunks are packed greedily, in order; joined, they
    hold every non-whitespace character of ``text``. Whitespace around chunks is stripped.

    Args:
        text: the text.
        max_tokens: the most tokens per chunk (at least 4).
        counter: the token counter of the model.

    Returns:
        The chunks; ``[]`` for a text of only whitespace.

    Raises:
        ValueError: ``max_tokens`` is under 4.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be an int, not {type(max_tokens).__name__}")
    if max_tokens < _MIN_CHUNK_TOKENS:
        raise ValueError(f"max_tokens must be >= {_MIN_CHUNK_TOKENS}, got {max_tokens}")
    stripped = text.strip()
    if not stripped:
        return []
    chunks: list[str] = []
    _chunk_into(chunks, stripped, 0, max_tokens, counter)
    return chunks


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after each match of ``pattern``: the separators stay with the piece before."""
    cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _emit(chunks: list[str], text: str) -> None:
    chunk = text.strip()
    if chunk:
        chunks.append(chunk)


def _chunk_into(
    chunks: list[str], text: str, level: int, max_tokens: int, counter: TokenCounter
) -> None:
    if counter.count(text) <= max_tokens:
        _emit(chunks, text)
        return
    if level == len(_SPLITTERS):
        _hard_cut(chunks, text, max_tokens, counter)
        return
    pieces = _pieces(text, _SPLITTERS[level])
    if len(pieces) == 1:
        _chunk_into(chunks, text, level + 1, max_tokens, counter)
        return
    # Counting each piece once and packing by the sum keeps this linear; each packed chunk is
    # then checked as a whole, since tokens do not add up exactly across a join.
    counts = counter.count_many(pieces)
    group: list[str] = []
    group_tokens = 0
    for piece, tokens in zip(pieces, counts, strict=True):
        if tokens > max_tokens:
            _pack(chunks, group, level, max_tokens, counter)
            group, group_tokens = [], 0
            _chunk_into(chunks, piece, level + 1, max_tokens, counter)
            continue
        if group and group_tokens + tokens > max_tokens:
            _pack(chunks, group, level, max_tokens, counter)
            group, group_tokens = [], 0
        group.append(piece)
        group_tokens += tokens
    _pack(chunks, group, level, max_tokens, counter)


def _pack(
    chunks: list[str], group: list[str], level: int, max_tokens: int, counter: TokenCounter
) -> None:
    if not group:
        return
    joined = "".join(group)
    if len(group) == 1 or counter.count(joined.strip()) <= max_tokens:
        if len(group) == 1:
            _chunk_into(chunks, joined, level + 1, max_tokens, counter)
        else:
            _emit(chunks, joined)
        return
    middle = len(group) // 2
    _pack(chunks, group[:middle], level, max_tokens, counter)
    _pack(chunks, group[middle:], level, max_tokens, counter)


def _hard_cut(chunks: list[str], text: str, max_tokens: int, counter: TokenCounter) -> None:
    # Truncating a bounded window keeps a 10 MB word linear: a prefix shorter than the best is
    # still a valid chunk.
    window = 16 * max_tokens
    rest = text
    while rest:
        head = counter.truncate(rest[:window], max_tokens)
        if not head:
            # Unreachable for max_tokens >= 4 (no character is over 4 tokens); never loop.
            head = rest[0]
        _emit(chunks, head)
        rest = rest[len(head) :].lstrip()
