"""Ray Data: embed, summarise or map a Dataset in actors, every row back with its outcome.

```python
import ray
from resilient_llm.integrations.ray import collect_stats, embed_dataset

ds = ray.data.read_parquet("s3://bucket/chunks/")
out = embed_dataset(ds, column="text", actors=4, requests_per_minute=3_000).materialize()
stats = collect_stats(out)   # one account of the whole job: stats.summary(), stats.failed
out.filter(lambda row: row["error_type"] is not None).show()   # the rows that failed, and why
```

Each actor builds one :class:`~resilient_llm.ResilientClient` in ``__init__`` from the options
it is given (a client is never pickled) and runs each batch of rows through
:func:`~resilient_llm.integrations.pandas.embed_frame` (or ``summarize_frame``, ``map_frame``)
with the library's bounded concurrency. A row that fails comes back with its error in the
``error_type``, ``error_message`` and ``attempts`` columns, so Ray never fails or drops a block
for it; an error that every request would meet (a bad key, an unknown model, no quota, an
unreachable server) raises :class:`BatchStopped` and stops the job.

Accounting: the :class:`~resilient_llm.BatchStats` of each batch travel with its rows, as JSON in
the ``batch_stats`` column of the batch's first row; :func:`collect_stats` merges them.

Rate limits: ``requests_per_minute`` / ``tokens_per_minute`` are the job's budget, divided among
the actors (each gets ``1/actors`` of it); ``rate_limiter=`` a shared limiter (``FileRateLimiter``
for the workers of one machine, ``RedisRateLimiter`` for many), or a factory that builds one in
each actor, makes them share one budget instead.

Needs ``pip install 'resilient-llm[ray]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._extras import needs

with needs(__name__, "ray[data]", "ray"):
    import ray.data  # type: ignore[import-not-found,unused-ignore]

from .._client import ResilientClient
from .._config import EmbedBatchOptions, MapOptions, SummarizeBatchOptions
from ._actor_options import (
    ACTOR_OPTIONS,
    CLIENT_OPTIONS,
    Actors,
    actor_rate_limiter,
    check_dataset_options,
)
from ._outcomes import ATTEMPTS, BATCH_STATS, ERROR_MESSAGE, ERROR_TYPE, BatchStopped, JobSummary
from .pandas import collect_stats as collect_frame_stats
from .pandas import embed_frame, map_frame, summarize_frame

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,import-not-found,unused-ignore]

__all__ = [
    "ATTEMPTS",
    "BATCH_STATS",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "BatchStopped",
    "Embed",
    "JobSummary",
    "Map",
    "Summarize",
    "collect_stats",
    "embed_dataset",
    "map_dataset",
    "summarize_dataset",
]

logger = logging.getLogger("resilient_llm")

#: Rows handed to one actor call by the ``*_dataset`` helpers (Ray's ``batch_size``).
DEFAULT_ROWS_PER_BATCH = 1024

#: The ``*_frame`` function each kind of actor runs a batch of rows through.
_FRAMES: dict[str, Callable[..., pd.DataFrame]] = {
    "embeddings": embed_frame,
    "summaries": summarize_frame,
    "map": map_frame,
}


class _Dataset(Protocol):
    def map_batches(self, fn: Any, **kwargs: Any) -> Any: ...

    def select_columns(self, cols: list[str]) -> Any: ...


class _Rows:
    """What the three actor classes share: the client, the rate limit, the options, the call.

    A subclass names its ``*_frame`` function (`_kind`), its options, and the defaults of its
    columns; the actor options (``actors``, ``requests_per_minute``...) are taken here.
    """

    _kind: str
    _batch_options: frozenset[str]

    def __init__(
        self,
        *,
        column: str | None,
        output_column: str,
        actors: Actors | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: Any = None,
        rate_window: float = 60.0,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - CLIENT_OPTIONS - self._batch_options)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected option {unknown[0]!r}")
        self.column = column
        self.output_column = output_column
        self.batch_options = {k: v for k, v in options.items() if k not in CLIENT_OPTIONS}
        limiter = actor_rate_limiter(
            actors=actors,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            rate_limiter=rate_limiter,
            window=rate_window,
        )
        client_options = {k: v for k, v in options.items() if k in CLIENT_OPTIONS}
        self.client = ResilientClient(rate_limiter=limiter, **client_options)
        # Ray may have queued more batches on this actor before it aborts the job.
        self._stopped: BatchStopped | None = None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Run one batch of rows; the rows back with the value and outcome columns.

        Raises:
            BatchStopped: a request-level error ended this batch, or an earlier one of this
                actor (which then sends nothing more: every request would meet it too).
        """
        if self._stopped is not None:
            raise BatchStopped(self._stopped.result)
        try:
            return self._run(batch)
        except BatchStopped as exc:
            self._stopped = exc
            raise

    def _run(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _FRAMES[self._kind](
            batch,
            self.client,
            *self._frame_args(),
            column=self.column,
            output_column=self.output_column,
            **self.batch_options,
        )

    def _frame_args(self) -> tuple[Any, ...]:
        """The positional arguments of the ``*_frame`` function after the client."""
        return ()

    def close(self) -> None:
        """Close the actor's client (Ray calls ``__del__`` when it shuts the actor down)."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - the actor is going away; say so, do not raise
            logger.debug("closing a %s actor's client failed", self._kind, exc_info=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(column={self.column!r}, client={self.client!r})"


class Embed(_Rows):
    """Embed a column of each batch: for ``ds.map_batches(Embed, batch_format="pandas", ...)``.

    Prefer :func:`embed_dataset`, which passes the pool size on. To call ``map_batches``
    yourself, give the options as ``fn_constructor_kwargs`` and ``actors=`` the pool size::

        ds.map_batches(
            Embed,
            fn_constructor_kwargs={"column": "text", "actors": 4, "requests_per_minute": 3000},
            compute=ray.data.ActorPoolStrategy(size=4),
            batch_size=1024,
            batch_format="pandas",
        )

    Args:
        column: the column holding the texts.
        output_column: the column to put the vectors in (default ``"embedding"``).
        actors: the size of the actor pool (``(min, max)`` for an autoscaling pool): the rate
            budget is divided by it (by ``max``). Needed with ``requests_per_minute`` or
            ``tokens_per_minute``.
        requests_per_minute: the job's request budget, divided among the actors.
        tokens_per_minute: the job's token budget, divided among the actors.
        rate_limiter: one budget shared by every actor instead: a factory called once in
            each actor (``functools.partial(FileRateLimiter, path, requests_per_minute=3000)``,
            or a ``RedisRateLimiter`` the same way), or a limiter that pickles.
        rate_window: the seconds ``requests_per_minute`` and ``tokens_per_minute`` count over
            (60; shorter in tests).
        **options: the client's options (``api_key``, ``base_url``, ``embedding_model``,
            ``timeouts``, ``deadline``, ``retry``, ``max_concurrency``...; ``api_key`` defaults
            to ``OPENAI_API_KEY`` in the actor's environment), and ``embed_batch``'s
            (``model``, ``dimensions``, ``batch_size``, ``too_long``...).
    """

    _kind = "embeddings"
    _batch_options = frozenset(EmbedBatchOptions.__optional_keys__) - ACTOR_OPTIONS

    def __init__(
        self, *, column: str = "text", output_column: str = "embedding", **options: Any
    ) -> None:
        super().__init__(column=column, output_column=output_column, **options)


class Summarize(_Rows):
    """Summarise a column of each batch, one chat completion per row (see :class:`Embed`).

    Args:
        column: the column holding the texts.
        output_column: the column to put the summaries in (default ``"summary"``).
        actors, requests_per_minute, tokens_per_minute, rate_limiter, rate_window: as for
            :class:`Embed`.
        **options: the client's options (``chat_model``...) and ``summarize_batch``'s
            (``instructions``, ``max_words``, ``model``...).
    """

    _kind = "summaries"
    _batch_options = frozenset(SummarizeBatchOptions.__optional_keys__) - ACTOR_OPTIONS

    def __init__(
        self, *, column: str = "text", output_column: str = "summary", **options: Any
    ) -> None:
        super().__init__(column=column, output_column=output_column, **options)


class Map(_Rows):
    """Call ``fn(client, item)`` for every row with the actor's client (see :class:`Embed`).

    Args:
        fn: ``fn(client, item) -> value``, pickled to the actors; ``client`` is the actor's
            :class:`~resilient_llm.ResilientClient`, whose calls are retried, paced by the
            rate budget and counted. An exception fails that row only.
        column: ``item`` is this column's value; ``None`` (default): the row as a ``dict``.
        output_column: the column to put the values in (default ``"result"``).
        actors, requests_per_minute, tokens_per_minute, rate_limiter, rate_window: as for
            :class:`Embed`.
        **options: the client's options and ``map``'s (``deadline_per_item``...).
    """

    _kind = "map"
    _batch_options = frozenset(MapOptions.__optional_keys__)

    def __init__(
        self,
        fn: Callable[[ResilientClient, Any], Any],
        *,
        column: str | None = None,
        output_column: str = "result",
        **options: Any,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        self.fn = fn
        super().__init__(column=column, output_column=output_column, **options)

    def _frame_args(self) -> tuple[Any, ...]:
        return (self.fn,)


# --- the dataset helpers -------------------------------------------------------------------


def embed_dataset(
    ds: _Dataset,
    *,
    column: str = "text",
    actors: Actors = 2,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    map_batches_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """``ds`` with a vector column and the outcome columns, embedded by a pool of actors.

    Lazy, like every Ray transformation: run it with ``.materialize()``, ``.write_parquet()``...

    Args:
        ds: a ``ray.data.Dataset`` with a text column.
        column: the column holding the texts.
        actors: actors in the pool, or ``(min, max)`` for an autoscaling pool.
        rows_per_batch: rows per actor call (Ray's ``batch_size``); the rows of a call are
            embedded in up to ``max_concurrency`` requests side by side.
        map_batches_options: more arguments for ``map_batches`` (``num_cpus``,
            ``runtime_env``...).
        **options: options of :class:`Embed` (client, ``embed_batch`` and rate options).

    Returns:
        The transformed dataset.
    """
    return _map_dataset(ds, Embed, (), column, actors, rows_per_batch, map_batches_options, options)


def summarize_dataset(
    ds: _Dataset,
    *,
    column: str = "text",
    actors: Actors = 2,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    map_batches_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """``ds`` with a summary column and the outcome columns (see :func:`embed_dataset`)."""
    return _map_dataset(
        ds, Summarize, (), column, actors, rows_per_batch, map_batches_options, options
    )


def map_dataset(
    ds: _Dataset,
    fn: Callable[[ResilientClient, Any], Any],
    *,
    column: str | None = None,
    actors: Actors = 2,
    rows_per_batch: int = DEFAULT_ROWS_PER_BATCH,
    map_batches_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """``ds`` with ``fn(client, item)`` of every row and the outcome columns (see :class:`Map`)."""
    return _map_dataset(
        ds, Map, (fn,), column, actors, rows_per_batch, map_batches_options, options
    )


def _map_dataset(
    ds: _Dataset,
    udf: type[_Rows],
    args: tuple[Any, ...],
    column: str | None,
    actors: Actors,
    rows_per_batch: int,
    map_batches_options: Mapping[str, Any] | None,
    options: dict[str, Any],
) -> Any:
    # Checked here, on the driver, rather than in every actor once the job has started.
    low, high = check_dataset_options(actors, rows_per_batch, udf._batch_options, options)
    compute = (
        ray.data.ActorPoolStrategy(size=low)
        if low == high
        else ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    )
    kwargs: dict[str, Any] = {
        "compute": compute,
        "batch_size": rows_per_batch,
        "batch_format": "pandas",
        **(map_batches_options or {}),
    }
    constructor = {"column": column, "actors": actors, **options}
    return ds.map_batches(
        udf, fn_constructor_args=args, fn_constructor_kwargs=constructor, **kwargs
    )


# --- accounting ------------------------------------------------------------------------


def collect_stats(ds: _Dataset) -> JobSummary:
    """One account of a finished job: rows, succeeded, failed by type, requests, retries, tokens.

    Reads only the ``error_type`` and ``batch_stats`` columns and merges every batch's
    :class:`~resilient_llm.BatchStats`. The dataset is evaluated: pass a materialized one
    (``ds.materialize()``) or one read back from storage, not the lazy output of
    :func:`embed_dataset`, or every request would be sent again. Collect before filtering rows.

    Raises:
        KeyError: the dataset has no outcome columns.
        ValueError: its rows do not match the batches' counts (rows were filtered, dropped or
            duplicated after the call).
    """
    frames = ds.select_columns([ERROR_TYPE, BATCH_STATS]).iter_batches(
        batch_format="pandas", batch_size=None
    )
    return collect_frame_stats(frames)
