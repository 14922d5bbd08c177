"""The outcome columns every integration adds to its rows, and their accounting (no pandas).

Each call's :class:`~resilient_llm.BatchStats` travels as JSON in its first row's ``batch_stats``
cell; :func:`~resilient_llm.integrations.pandas.collect_stats` adds them up into a
:class:`JobSummary`. :class:`BatchStopped` ends a call that every request would fail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .._batch.results import BatchResult, BatchStats, clip
from .._exceptions import BatchFailed

ERROR_TYPE = "error_type"
ERROR_MESSAGE = "error_message"
ATTEMPTS = "attempts"
BATCH_STATS = "batch_stats"

_STATS_FIELDS = frozenset(spec.name for spec in fields(BatchStats))


class BatchStopped(BatchFailed):
    """A call ended early on an error that every request would meet, so the job must stop.

    A bad key (401), no permission (403), an unknown model or wrong URL (404), an account out of
    credit (429 ``insufficient_quota``) or a server found unreachable: going on would only turn
    every row into the same failure. Raised by the ``*_frame`` functions (and so by the Ray
    classes, which fails the Ray job) instead of returning the frame.

    Attributes:
        result: the call's :class:`~resilient_llm.BatchResult`; ``result.stopped_by`` is the
            error that ended it.
    """

    def __init__(self, result: BatchResult[Any]) -> None:
        super().__init__(result)
        stop = result.stopped_by
        assert stop is not None
        status = f" (HTTP {stop.status})" if stop.status is not None else ""
        stats = result.stats
        self.args = (
            f"the batch stopped early on {stop.error_type}{status}: {clip(stop.message, 500)} "
            f"-- every further request would fail the same way, so no row of this batch is "
            f"returned ({stats.total} rows, {stats.not_sent} not sent); fix the key, model, "
            f"quota or URL and run the job again",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels between processes (Ray, Dask, Spark) as itself.
        return (BatchStopped, (self.result,))


@dataclass(frozen=True)
class JobSummary:
    """One account of a job that ran in many calls (partitions, Ray batches, actors).

    Attributes:
        stats: every call's :class:`~resilient_llm.BatchStats`, merged (``elapsed``: the
            longest single call, not the job's wall-clock time).
        rows: rows seen.
        batches: calls whose stats were found.
        failed_by_type: failed rows per ``error_type``, most frequent first.
    """

    stats: BatchStats
    rows: int
    batches: int
    failed_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        """Rows with a value."""
        return self.stats.succeeded

    @property
    def failed(self) -> int:
        """Rows with an error."""
        return self.stats.failed

    def summary(self) -> str:
        """A few human-readable lines: rows, requests, retries, tokens, failures by type."""
        s = self.stats
        lines = [
            f"{self.rows} rows in {self.batches} batches: {s.succeeded} succeeded, "
            f"{s.failed} failed" + (f" ({s.not_sent} not sent)" if s.not_sent else ""),
            f"{s.requests} requests, {s.retries} retries ({s.rate_limited} rate-limited, "
            f"{s.timeouts} timeouts), {s.bisections} bisections, "
            f"{s.prompt_tokens} prompt tokens, {s.total_tokens} total tokens",
        ]
        lines.extend(f"  {name}: {count}" for name, count in self.failed_by_type.items())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """Plain values, for logs and JSON."""
        return {
            "rows": self.rows,
            "batches": self.batches,
            "failed_by_type": dict(self.failed_by_type),
            "stats": self.stats.as_dict(),
        }


def stats_to_json(stats: BatchStats) -> str:
    """The ``batch_stats`` cell of a call."""
    return json.dumps(stats.as_dict(), separators=(",", ":"))


def stats_from_json(text: object) -> BatchStats:
    """A ``batch_stats`` cell back to :class:`~resilient_llm.BatchStats`.

    Fields this version does not know (written by a newer one) are left out.
    """
    if not isinstance(text, str):
        raise ValueError(f"a batch_stats cell must be a JSON string, not {type(text).__name__}")
    data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"a batch_stats cell must be a JSON object, got {clip(text, 80)!r}")
    return BatchStats(**{name: value for name, value in data.items() if name in _STATS_FIELDS})
