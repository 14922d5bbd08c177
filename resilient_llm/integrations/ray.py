"""Ray Data: embed, summarise or map a Dataset in actors, every row back with its outcome.

```python
import ray
from resilient_llm.integrations.ray import collect_stats, embed_dataset

ds = ray.data.read_parquet("s3://bucket/chunks/")
out = embed_dataset(ds, column="text", actors=4, requests_per_minute=3_000).materialize()
print(collect_stats(out).summary())          # one account of the whole job
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

try:
    import ray.data  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_llm.integrations.ray needs ray[data]: pip install 'resilient-llm[ray]'"
    ) from exc

from .._client import ResilientClient
from .._config import EmbedBatchOptions, MapOptions, SummarizeBatchOptions, check_positive
from .._limits import LocalRateLimiter
from .pandas import (
    ATTEMPTS,
    BATCH_STATS,
    ERROR_MESSAGE,
    ERROR_TYPE,
    BatchStopped,
    JobSummary,
    embed_frame,
    map_frame,
    summarize_frame,
)
from .pandas import collect_stats as collect_frame_stats

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

# Options of the ResilientClient each actor builds; every other option goes to the batch call.
CLIENT_OPTIONS = frozenset(
    {
        "api_key",
        "base_url",
        "organization",
        "project",
        "default_headers",
        "chat_model",
        "embedding_model",
        "timeouts",
        "deadline",
        "retry",
        "max_concurrency",
        "openai_factory",
        "on_retry",
        "on_call",
    }
)
# Set once per actor, for the actor's lifetime, rather than per batch.
_ACTOR_OPTIONS = frozenset(
    {"requests_per_minute", "tokens_per_minute", "rate_limiter", "rate_window"}
)

Actors = int | tuple[int, int] | tuple[int, int, int]


class _Dataset(Protocol):
    def map_batches(self, fn: Any, **kwargs: Any) -> Any: ...

    def select_columns(self, cols: list[str]) -> Any: ...


class _Rows:
    """What the three actor classes share: the client, the rate limit, the options."""

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
        raise NotImplementedError

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
    _batch_options = frozenset(EmbedBatchOptions.__optional_keys__) - _ACTOR_OPTIONS

    def __init__(
        self,
        *,
        column: str = "text",
        output_column: str = "embedding",
        actors: Actors | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: Any = None,
        rate_window: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(
            column=column,
            output_column=output_column,
            actors=actors,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            rate_limiter=rate_limiter,
            rate_window=rate_window,
            **options,
        )

    def _run(self, batch: pd.DataFrame) -> pd.DataFrame:
        assert self.column is not None
        return embed_frame(
            batch,
            self.client,
            column=self.column,
            output_column=self.output_column,
            **self.batch_options,
        )


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
    _batch_options = frozenset(SummarizeBatchOptions.__optional_keys__) - _ACTOR_OPTIONS

    def __init__(
        self,
        *,
        column: str = "text",
        output_column: str = "summary",
        actors: Actors | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: Any = None,
        rate_window: float = 60.0,
        **options: Any,
    ) -> None:
        super().__init__(
            column=column,
            output_column=output_column,
            actors=actors,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            rate_limiter=rate_limiter,
            rate_window=rate_window,
            **options,
        )

    def _run(self, batch: pd.DataFrame) -> pd.DataFrame:
        assert self.column is not None
        return summarize_frame(
            batch,
            self.client,
            column=self.column,
            output_column=self.output_column,
            **self.batch_options,
        )


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
        actors: Actors | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_limiter: Any = None,
        rate_window: float = 60.0,
        **options: Any,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        self.fn = fn
        super().__init__(
            column=column,
            output_column=output_column,
            actors=actors,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            rate_limiter=rate_limiter,
            rate_window=rate_window,
            **options,
        )

    def _run(self, batch: pd.DataFrame) -> pd.DataFrame:
        return map_frame(
            batch,
            self.client,
            self.fn,
            column=self.column,
            output_column=self.output_column,
            **self.batch_options,
        )


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
    low, high = _pool_bounds(actors)
    if (
        isinstance(rows_per_batch, bool)
        or not isinstance(rows_per_batch, int)
        or rows_per_batch < 1
    ):
        raise ValueError(f"rows_per_batch must be an int >= 1, got {rows_per_batch!r}")
    unknown = sorted(set(options) - CLIENT_OPTIONS - udf._batch_options - _ACTOR_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected option {unknown[0]!r}")
    # Checked here, on the driver, rather than in every actor once the job has started.
    _check_rate_options(
        options.get("requests_per_minute"),
        options.get("tokens_per_minute"),
        options.get("rate_limiter"),
    )
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


# --- accounting and rate limits ------------------------------------------------------------


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


def actor_rate_limiter(
    *,
    actors: Actors | None,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
    rate_limiter: Any,
    window: float = 60.0,
) -> Any:
    """The limiter of one actor's client: a shared one, this actor's share of the budget, or
    ``None``."""
    _check_rate_options(requests_per_minute, tokens_per_minute, rate_limiter)
    if rate_limiter is not None:
        limiter = rate_limiter if _is_limiter(rate_limiter) else rate_limiter()
        if not _is_limiter(limiter):
            raise TypeError(
                "rate_limiter's factory must return a RateLimiter (with reserve() and pause()), "
                f"not {type(limiter).__name__}"
            )
        return limiter
    if requests_per_minute is None and tokens_per_minute is None:
        return None
    if actors is None:
        raise ValueError(
            "requests_per_minute and tokens_per_minute are the job's budget, divided among its "
            "actors: pass actors= (the size of the actor pool given to map_batches), or use "
            "embed_dataset / summarize_dataset / map_dataset, which pass it on"
        )
    _, share = _pool_bounds(actors)
    check_positive("rate_window", window)
    return LocalRateLimiter(
        requests_per_minute=None if requests_per_minute is None else requests_per_minute / share,
        tokens_per_minute=None if tokens_per_minute is None else tokens_per_minute / share,
        window=window,
    )


def _check_rate_options(
    requests_per_minute: float | None, tokens_per_minute: float | None, rate_limiter: Any
) -> None:
    if rate_limiter is None:
        return
    if requests_per_minute is not None or tokens_per_minute is not None:
        raise ValueError(
            "give either rate_limiter= (one budget every actor shares, set on the limiter) or "
            "requests_per_minute= / tokens_per_minute= (a budget divided among the actors), "
            "not both"
        )
    if not _is_limiter(rate_limiter) and not callable(rate_limiter):
        raise TypeError(
            "rate_limiter must be a RateLimiter (with reserve() and pause()) or a factory "
            f"that returns one, not {type(rate_limiter).__name__}"
        )


def _is_limiter(value: object) -> bool:
    return hasattr(value, "reserve") and hasattr(value, "pause")


def _pool_bounds(actors: object) -> tuple[int, int]:
    """``(min, max)`` of an actor pool given as ``n``, ``(min, max)`` or ``(min, max, initial)``."""
    sizes = actors if isinstance(actors, tuple) else (actors, actors)
    if len(sizes) == 3:
        sizes = sizes[:2]
    if (
        len(sizes) != 2
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)
        or sizes[0] > sizes[1]
    ):
        raise ValueError(
            f"actors must be an int >= 1, or (min, max) with 1 <= min <= max, got {actors!r}"
        )
    return sizes[0], sizes[1]
