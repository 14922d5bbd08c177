"""The public records of a batch: ``ItemFailure``, ``BatchStats`` and ``BatchResult``."""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar, cast

from .._exceptions import BatchFailed
from .._secrets import format_exception, redact

__all__ = ["BatchResult", "BatchStats", "ItemFailure", "preview"]

T = TypeVar("T")

PREVIEW_CHARS = 80
# Failure records are kept for every failed item, even in streaming mode: bound each one.
MAX_MESSAGE_CHARS = 2_000
MAX_TRACEBACK_CHARS = 16_000


def clip(text: str, limit: int) -> str:
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
    text_attr = getattr(obj, "text", None)
    if isinstance(text_attr, str) and not isinstance(obj, str):
        obj = text_attr
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
    return clip(text.replace("\n", "\\n"), limit)


def status_of(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why one input of a batch failed.

    Attributes:
        index: position of the input in the batch (0-based).
        error_type: class name of the error, for example ``"BadRequestError"``.
        message: the error's message (API keys masked, clipped to 2,000 characters).
        status: the HTTP status when the error has one.
        attempts: how many attempts were made for this item (0 if it was never sent).
        traceback: the formatted traceback of the error (API keys masked).
        preview: the first characters of the input.
        not_sent: the input was never sent: the batch ended early (the error is the one that
            ended it) or its deadline came before its turn. Nothing is known to be wrong with
            this input: send it again.
    """

    index: int
    error_type: str
    message: str
    status: int | None
    attempts: int
    traceback: str = field(repr=False)
    preview: str
    not_sent: bool = False

    @classmethod
    def from_exception(
        cls, index: int, exc: BaseException, *, attempts: int, item: object, not_sent: bool = False
    ) -> ItemFailure:
        """The record of ``item`` (the raw input, or an object with a ``text``) failing with
        ``exc``."""
        return cls(
            index=index,
            error_type=type(exc).__name__,
            message=clip(redact(str(exc)), MAX_MESSAGE_CHARS),
            status=status_of(exc),
            attempts=attempts,
            traceback=clip(format_exception(exc), MAX_TRACEBACK_CHARS),
            preview=preview(item),
            not_sent=not_sent,
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
            "not_sent": self.not_sent,
        }


@dataclass(frozen=True, slots=True)
class BatchStats:
    """Counts of one batch (or, merged, of many).

    Attributes:
        total: inputs read.
        succeeded: inputs with a value.
        failed: inputs with an :class:`ItemFailure` (``not_sent`` included).
        not_sent: inputs failed without being sent, the batch having ended early or their
            deadline having come first (not those refused by the input checks).
        requests: HTTP requests sent (retries, bisection halves and probes included).
        retries: attempts that were retried.
        rate_limited: retries caused by HTTP 429.
        timeouts: retries caused by a timeout.
        bisections: rejected requests split in halves to find bad inputs.
        prompt_tokens: prompt tokens reported by the server.
        total_tokens: total tokens reported by the server.
        elapsed: wall-clock seconds of the batch (merged: the longest).
        size_limit: the inputs per request the server turned out to accept, when it refused a
            larger request (merged: the smallest); ``None`` if it never did.
    """

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    not_sent: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    bisections: int = 0
    prompt_tokens: int = 0
    total_tokens: int = 0
    elapsed: float = 0.0
    size_limit: int | None = None

    @property
    def throughput(self) -> float:
        """Succeeded items per second (0.0 before any time has passed)."""
        return self.succeeded / self.elapsed if self.elapsed > 0 else 0.0

    def merge(self, other: BatchStats) -> BatchStats:
        """The counts of both batches together (for workers, actors or shards of one job).

        Counts add up; ``elapsed`` is the longer of the two (they usually ran side by side);
        ``size_limit`` the smaller.
        """
        if not isinstance(other, BatchStats):
            raise TypeError(f"can only merge BatchStats, not {type(other).__name__}")
        values: dict[str, Any] = {}
        for spec in fields(self):
            mine, theirs = getattr(self, spec.name), getattr(other, spec.name)
            if spec.name == "elapsed":
                values[spec.name] = max(mine, theirs)
            elif spec.name == "size_limit":
                known = [limit for limit in (mine, theirs) if limit is not None]
                values[spec.name] = min(known) if known else None
            else:
                values[spec.name] = mine + theirs
        return BatchStats(**values)

    def __add__(self, other: object) -> BatchStats:
        if not isinstance(other, BatchStats):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> BatchStats:
        # sum(stats_list) starts from 0.
        if other == 0:
            return self
        return self.__add__(other)

    def as_dict(self) -> dict[str, object]:
        """The counts as plain values (for logs and JSON)."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """The outcome of a batch: one slot per input, in input order.

    Attributes:
        values: the value of each input, ``None`` where it failed (empty when the batch was
            run without keeping values, as the streaming forms do).
        failures: one record per failed input, sorted by index.
        stats: the batch's counts.
        stopped_by: the failure record of the error that ended the batch early (a bad key, an
            unknown model, no credit, an unreachable server), ``None`` when it ran to the end.
    """

    values: list[T | None]
    failures: list[ItemFailure]
    stats: BatchStats
    stopped_by: ItemFailure | None = None

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
        not_sent = f" ({s.not_sent} not sent)" if s.not_sent else ""
        lines = [
            f"{s.total} items: {s.succeeded} succeeded, {s.failed} failed{not_sent} in "
            f"{s.elapsed:.2f} s ({s.throughput:.1f} items/s)",
            f"{s.requests} requests, {s.retries} retries ({s.rate_limited} rate-limited, "
            f"{s.timeouts} timeouts), {s.bisections} bisections, "
            f"{s.prompt_tokens} prompt tokens, {s.total_tokens} total tokens",
        ]
        if s.size_limit is not None:
            lines.append(f"the server accepted at most {s.size_limit} inputs per request")
        if self.stopped_by is not None:
            stop = self.stopped_by
            lines.append(f"stopped early by {stop.error_type}: {clip(stop.message, 200)}")
        for failure in self.failures[:max_failures]:
            status = f" (HTTP {failure.status})" if failure.status is not None else ""
            message = clip(failure.message, 200)
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
            first = f", first_failure=(item {f.index}: {f.error_type}: {clip(f.message, 80)!r})"
        return (
            f"BatchResult(total={s.total}, succeeded={s.succeeded}, failed={s.failed}, "
            f"requests={s.requests}, retries={s.retries}, elapsed={s.elapsed:.2f}s{first})"
        )
