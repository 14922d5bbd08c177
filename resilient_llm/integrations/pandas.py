"""pandas DataFrames through the batch engine: every row comes back, with its value or its error.

```python
from resilient_llm import ResilientClient
from resilient_llm.integrations.pandas import collect_stats, embed_frame

with ResilientClient() as client:
    out = embed_frame(df, client, column="text", dimensions=256)
failed = out[out["error_type"].notna()]   # the rows that failed, and why
stats = collect_stats(out)                 # one account: stats.summary()
```

The same functions serve Dask (``ddf.map_partitions``) and Spark (``df.mapInPandas``): see the
README, "On a cluster". ``resilient_llm.integrations.ray`` runs them in Ray Data actors.

Columns added to each frame (the input's columns and index are kept, rows in the same order):

- the value (``embedding``, ``summary`` or ``result`` unless ``output_column=`` says otherwise):
  null where the row failed;
- ``error_type``, ``error_message``: null where the row succeeded;
- ``attempts``: attempts made for a failed row (0: it was never sent); null where it succeeded;
- ``batch_stats``: the :class:`~resilient_llm.BatchStats` of the call as JSON, on the call's
  first row only (null elsewhere), so that the counts travel with the rows through any engine and
  :func:`collect_stats` adds them up at the end.

A row's failure never raises. An error that every request would meet (a bad key, an unknown
model, no quota, an unreachable server) ends the call with :class:`BatchStopped`, so that the
job stops instead of filling a table with that error.

Needs pandas (``pip install 'resilient-llm[ray]'`` installs it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._extras import needs

with needs(__name__, "pandas", "ray", also=" (or pip install pandas)"):
    import pandas as pd  # type: ignore[import-untyped,import-not-found,unused-ignore]

from .._batch.results import BatchResult, BatchStats
from .._client import ResilientClient
from .._config import MAX_BATCH_SIZE
from ._outcomes import (
    ATTEMPTS,
    BATCH_STATS,
    ERROR_MESSAGE,
    ERROR_TYPE,
    BatchStopped,
    JobSummary,
    stats_from_json,
    stats_to_json,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._config import EmbedBatchOptions, MapOptions, SummarizeBatchOptions

__all__ = [
    "ATTEMPTS",
    "BATCH_STATS",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "BatchStopped",
    "JobSummary",
    "collect_stats",
    "embed_frame",
    "map_frame",
    "summarize_frame",
]

T = TypeVar("T")


# --- the row-level functions ------------------------------------------------------------------


def embed_frame(
    df: pd.DataFrame,
    client: ResilientClient,
    *,
    column: str = "text",
    output_column: str = "embedding",
    **options: Unpack[EmbedBatchOptions],
) -> pd.DataFrame:
    """Embed one column of a frame; a new frame with the vectors and each row's outcome.

    Args:
        df: the rows; not modified.
        client: the client to send with (its ``max_concurrency`` bounds the requests in flight).
        column: the column holding the texts; a missing, non-string or blank text fails its
            row with ``InvalidInput`` and is never sent.
        output_column: the column to put the vectors in (lists of floats, null on failure).
        **options: ``embed_batch`` options (:class:`~resilient_llm.EmbedBatchOptions`).
            ``batch_size`` (inputs per request) defaults to the rows split evenly over
            ``max_concurrency`` requests (at most 2048 each), so that a frame's requests go out
            side by side.

    Returns:
        ``df``'s rows and columns, plus ``output_column``, ``error_type``, ``error_message``,
        ``attempts`` and ``batch_stats``.

    Raises:
        BatchStopped: a request-level error (bad key, unknown model, no quota, unreachable
            server) ended the call.
        KeyError: ``column`` is not in ``df``.
        ValueError: an output column is already in ``df``.
    """
    texts = _inputs(df, column, output_column)
    if options.get("batch_size") is None:
        concurrency = options.get("max_concurrency") or client.max_concurrency
        options["batch_size"] = _even_split(len(texts), concurrency)
    result = client.embed_batch(texts, **options)
    return _with_outcomes(df, output_column, result, dtype=None)


def summarize_frame(
    df: pd.DataFrame,
    client: ResilientClient,
    *,
    column: str = "text",
    output_column: str = "summary",
    **options: Unpack[SummarizeBatchOptions],
) -> pd.DataFrame:
    """Summarise one column of a frame, one chat completion per row, with each row's outcome.

    Args:
        df: the rows; not modified.
        client: the client to send with.
        column: the column holding the texts.
        output_column: the column to put the summaries in (null on failure).
        **options: ``summarize_batch`` options (:class:`~resilient_llm.SummarizeBatchOptions`:
            ``instructions``, ``max_words``, ``model``...).

    Returns:
        ``df`` plus ``output_column`` and the outcome columns (see :func:`embed_frame`).

    Raises:
        BatchStopped: a request-level error ended the call.
        KeyError: ``column`` is not in ``df``.
        ValueError: an output column is already in ``df``.
    """
    texts = _inputs(df, column, output_column)
    result = client.summarize_batch(texts, **options)
    return _with_outcomes(df, output_column, result, dtype="string")


def map_frame(
    df: pd.DataFrame,
    client: ResilientClient,
    fn: Callable[[ResilientClient, Any], T],
    *,
    column: str | None = None,
    output_column: str = "result",
    **options: Unpack[MapOptions],
) -> pd.DataFrame:
    """Call ``fn(client, item)`` for every row on the client's bounded pool, with each outcome.

    For any per-row work: classification, extraction, tagging. Calls ``fn`` makes through
    ``client`` are retried, bounded by ``deadline_per_item`` and counted in the stats.

    Args:
        df: the rows; not modified.
        client: handed to ``fn`` (in Ray, the actor's own client).
        fn: ``fn(client, item) -> value``; the value must fit in a column (str, number, list,
            dict). An exception fails that row only.
        column: ``item`` is this column's value; ``None`` (default): the row as a ``dict``.
        output_column: the column to put the values in (null on failure).
        **options: ``map`` options (:class:`~resilient_llm.MapOptions`).

    Returns:
        ``df`` plus ``output_column`` and the outcome columns (see :func:`embed_frame`).

    Raises:
        BatchStopped: a request-level error ended the call.
        KeyError: ``column`` is not in ``df``.
        ValueError: an output column is already in ``df``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    if column is None:
        _check_outputs(df, output_column)
        items: list[Any] = df.to_dict("records")
    else:
        items = _inputs(df, column, output_column)

    def call(item: Any) -> T:
        return fn(client, item)

    result = client.map(call, items, **options)
    return _with_outcomes(df, output_column, result, dtype=None)


# --- accounting ------------------------------------------------------------------------------


def collect_stats(frames: pd.DataFrame | Iterable[pd.DataFrame]) -> JobSummary:
    """Add up the outcome columns of one frame or many into one :class:`JobSummary`.

    Pass the frames the ``*_frame`` functions returned (or their ``error_type`` and
    ``batch_stats`` columns), all of them and nothing else: the summary checks that the counts
    of the calls match the rows it was given.

    Raises:
        KeyError: a frame lacks the ``error_type`` or ``batch_stats`` column.
        ValueError: the rows do not match the calls' counts (rows were filtered, dropped or
            duplicated after the call, or some output is missing).
    """
    if isinstance(frames, pd.DataFrame):
        frames = [frames]
    stats = BatchStats()
    rows = batches = 0
    failed_by_type: dict[str, int] = {}
    for frame in frames:
        missing = [name for name in (ERROR_TYPE, BATCH_STATS) if name not in frame.columns]
        if missing:
            raise KeyError(
                f"no {', '.join(missing)} column: collect_stats reads the frames that "
                "embed_frame, summarize_frame or map_frame return"
            )
        rows += len(frame)
        for name, count in frame[ERROR_TYPE].dropna().value_counts().items():
            failed_by_type[str(name)] = failed_by_type.get(str(name), 0) + int(count)
        for text in frame[BATCH_STATS].dropna():
            stats = stats + stats_from_json(text)
            batches += 1
    failed_rows = sum(failed_by_type.values())
    if stats.total != rows or stats.failed != failed_rows:
        raise ValueError(
            f"the stats of {batches} batches count {stats.total} rows ({stats.failed} failed), "
            f"but the frames hold {rows} rows ({failed_rows} failed): rows were filtered, "
            "dropped or duplicated after the call, or some of its output is missing; "
            "collect the stats from the call's whole output"
        )
    ordered = dict(sorted(failed_by_type.items(), key=lambda pair: (-pair[1], pair[0])))
    return JobSummary(stats=stats, rows=rows, batches=batches, failed_by_type=ordered)


# --- helpers ---------------------------------------------------------------------------------


def _even_split(rows: int, concurrency: int) -> int:
    return max(1, min(MAX_BATCH_SIZE, math.ceil(rows / max(1, concurrency))))


def _check_outputs(df: pd.DataFrame, output_column: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, not {type(df).__name__}")
    if not isinstance(output_column, str) or not output_column:
        raise TypeError(f"output_column must be a non-empty string, got {output_column!r}")
    taken = [
        name
        for name in (output_column, ERROR_TYPE, ERROR_MESSAGE, ATTEMPTS, BATCH_STATS)
        if name in df.columns
    ]
    if taken:
        raise ValueError(
            f"the frame already has the column(s) {', '.join(map(repr, taken))}, which this "
            "call would overwrite; rename or drop them first (or pass another output_column=)"
        )


def _inputs(df: pd.DataFrame, column: str, output_column: str) -> list[Any]:
    _check_outputs(df, output_column)
    if column not in df.columns:
        raise KeyError(
            f"no column {column!r} in the frame (columns: {', '.join(map(str, df.columns))}); "
            "pass column= the name of the text column"
        )
    # Missing cells (None, NaN, pd.NA) go in as they are and fail their row as InvalidInput.
    values: list[Any] = df[column].tolist()
    return values


def _with_outcomes(
    df: pd.DataFrame, output_column: str, result: BatchResult[Any], *, dtype: str | None
) -> pd.DataFrame:
    if result.stopped_by is not None:
        raise BatchStopped(result)
    rows = len(df)
    error_type: list[str | None] = [None] * rows
    error_message: list[str | None] = [None] * rows
    attempts: list[int | None] = [None] * rows
    for failure in result.failures:
        error_type[failure.index] = failure.error_type
        error_message[failure.index] = failure.message
        attempts[failure.index] = failure.attempts
    batch_stats: list[str | None] = [None] * rows
    if rows:
        batch_stats[0] = stats_to_json(result.stats)
    # Typed columns, so that a batch without failures has the same schema as one with them
    # (Arrow, Ray and Spark would otherwise see a column of nulls).
    index = df.index
    return df.assign(
        **{
            output_column: pd.Series(result.values, index=index, dtype=dtype or object),
            ERROR_TYPE: pd.Series(error_type, index=index, dtype="string"),
            ERROR_MESSAGE: pd.Series(error_message, index=index, dtype="string"),
            ATTEMPTS: pd.Series(attempts, index=index, dtype="Int64"),
            BATCH_STATS: pd.Series(batch_stats, index=index, dtype="string"),
        }
    )
