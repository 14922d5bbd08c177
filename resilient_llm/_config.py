"""Configuration: frozen values validated on construction, and every option check of the library.

This is the one place where an option is validated, so a bad setting fails the same way, with a
message naming it, before any I/O, in the sync and the async facade alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

if TYPE_CHECKING:
    from ._limits import RateLimiter

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_SECONDS",
    "BatchOptions",
    "EmbedBatchOptions",
    "MapOptions",
    "ProgressCallback",
    "RetryPolicy",
    "SummarizeBatchOptions",
    "Timeouts",
    "TimeoutsLike",
    "TooLong",
    "check_batch_size",
    "check_callable",
    "check_deadline",
    "check_int",
    "check_model",
    "check_positive",
    "check_too_long",
]

# Sockets cannot wait longer than about 9e9 s; no sensible budget comes near this.
MAX_SECONDS = 10_000_000.0

#: The embeddings endpoint accepts at most this many inputs per request.
MAX_BATCH_SIZE = 2048

TooLong = Literal["fail", "truncate"]
ProgressCallback = Callable[[int, "int | None"], object]


# --- checks ----------------------------------------------------------------------------------


def check_positive(name: str, value: object, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float if it is a number of seconds in (0, 1e7], else raise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if number > MAX_SECONDS:
        raise ValueError(f"{name} must be at most {MAX_SECONDS:,.0f} seconds, got {value!r}")
    return number


def check_deadline(value: object, name: str = "deadline") -> float | None:
    """Validate a deadline in seconds; ``None`` means no wall-clock budget."""
    return check_positive(name, value, allow_none=True)


def check_int(name: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_batch_size(value: object, name: str = "batch_size") -> int:
    """Inputs per embeddings request: an int from 1 to 2048 (the API's limit)."""
    return check_int(name, value, minimum=1, maximum=MAX_BATCH_SIZE)


def check_too_long(value: object) -> TooLong:
    """The ``too_long`` option: ``"fail"`` or ``"truncate"``."""
    if isinstance(value, str) and value in ("fail", "truncate"):
        return cast(TooLong, value)
    raise ValueError(f"too_long must be 'fail' or 'truncate', got {value!r}")


def check_model(value: object, name: str = "model") -> str:
    """A model name: a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_callable(name: str, value: object) -> None:
    """``None`` or a callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


# --- per-attempt timeouts and the retry policy -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt HTTP timeouts in seconds, applied natively by the HTTP client.

    Args:
        connect: to establish a connection.
        read: between two chunks of the response (a trickling server resets it: the call's
            ``deadline`` is what bounds the whole call).
        write: between two chunks of the request.
        pool: to get a connection from the pool.
    """

    connect: float = 5.0
    read: float = 60.0
    write: float = 30.0
    pool: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool"):
            check_positive(f"timeouts.{name}", getattr(self, name))

    @classmethod
    def coerce(cls, value: TimeoutsLike) -> Timeouts:
        """Accept a :class:`Timeouts`, or one number that sets all four."""
        if isinstance(value, Timeouts):
            return value
        if value is None:
            return cls()
        seconds = check_positive("timeouts", value)
        assert seconds is not None
        return cls(connect=seconds, read=seconds, write=seconds, pool=seconds)

    def as_dict(self) -> dict[str, float]:
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": self.pool}


TimeoutsLike = Timeouts | float | int | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed attempts are retried.

    Args:
        max_attempts: attempts in all, the first one included (1 disables retries).
        base_delay: back-off before the first retry; doubles each retry (full jitter).
        max_delay: cap of one back-off sleep.
        max_retry_after: the longest server-directed delay (``Retry-After``) honoured; a server
            asking for longer fails the call at once rather than stalling it.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        check_int("retry.max_attempts", self.max_attempts)
        check_positive("retry.base_delay", self.base_delay)
        check_positive("retry.max_delay", self.max_delay)
        check_positive("retry.max_retry_after", self.max_retry_after)
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"retry.max_delay ({self.max_delay}) must be >= "
                f"retry.base_delay ({self.base_delay})"
            )


# --- batch options -----------------------------------------------------------------------------


class MapOptions(TypedDict, total=False):
    """Keyword options of ``map`` (all optional).

    Attributes:
        max_concurrency: items in flight at once (default: the client's ``max_concurrency``).
        deadline_per_item: wall-clock seconds for one item, everything it calls included.
        progress: show a tqdm progress bar.
        on_progress: called as ``on_progress(done, total)``; ``total`` is ``len(items)`` when
            the items have a length, ``None`` until the end otherwise.
    """

    max_concurrency: int | None
    deadline_per_item: float | None
    progress: bool
    on_progress: ProgressCallback | None


class _RequestBatchOptions(TypedDict, total=False):
    max_concurrency: int | None
    requests_per_minute: float | None
    tokens_per_minute: float | None
    rate_limiter: RateLimiter | None
    deadline: float | None
    progress: bool
    on_progress: ProgressCallback | None


class EmbedBatchOptions(_RequestBatchOptions, total=False):
    """Keyword options of ``embed_batch`` / ``iter_embed_batch`` (all optional).

    Attributes:
        model: defaults to the client's ``embedding_model``.
        batch_size: inputs per request (default and cap 2048); requests also stay under
            300,000 tokens, and shrink to what the server accepts if it refuses a size.
        max_concurrency: requests in flight (default: the client's); lowered on repeated 429s.
        too_long: ``"fail"`` (default) or ``"truncate"`` inputs over 8,191 tokens.
        requests_per_minute: a client-side request budget for this batch.
        tokens_per_minute: a client-side token budget for this batch.
        rate_limiter: a limiter for this batch (in addition to the client's).
        deadline: per request, retries included (default: the client's).
        progress: show a tqdm progress bar.
        on_progress: called as ``on_progress(done, total)``.
        dimensions: passed to the endpoint; every vector is checked to have this length.
        user: passed to the endpoint.
        encoding_format: ``"base64"`` (default, compact) or ``"float"`` on the wire; the
            vectors returned are lists of floats either way.
        extra_headers: extra HTTP headers for these requests.
        extra_query: extra query parameters for these requests.
        extra_body: extra JSON fields for these requests.
    """

    model: str | None
    batch_size: int | None
    too_long: TooLong
    dimensions: int
    user: str
    encoding_format: Literal["float", "base64"]
    extra_headers: dict[str, str] | None
    extra_query: dict[str, object] | None
    extra_body: dict[str, object] | None


class SummarizeBatchOptions(_RequestBatchOptions, total=False):
    """Keyword options of ``summarize_batch`` / ``iter_summarize_batch`` (all optional).

    Attributes:
        instructions: replace the default summary instructions.
        max_words: ask for at most this many words.
        model: defaults to the client's ``chat_model``.
        max_input_tokens: texts longer than this (default 100,000) are split, each part
            summarised, and the part summaries summarised (map-reduce).
        max_concurrency, requests_per_minute, tokens_per_minute, rate_limiter, deadline,
        progress, on_progress: as for :class:`EmbedBatchOptions`.
    """

    instructions: str | None
    max_words: int | None
    model: str | None
    max_input_tokens: int | None


_ENDPOINT_PARAMS = ("dimensions", "user", "encoding_format")
_REQUEST_OPTIONS = ("extra_headers", "extra_query", "extra_body")

# Long texts are map-reduced above this many tokens (well inside current chat context windows).
DEFAULT_MAX_INPUT_TOKENS = 100_000


def _unknown(method: str, options: dict[str, Any], known: Any) -> None:
    unknown = sorted(set(options) - set(known.__optional_keys__) - set(known.__required_keys__))
    if unknown:
        raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """The options of one batch, validated once: what the batch core runs on.

    Built by :meth:`for_embeddings`, :meth:`for_summaries` or :meth:`for_map` from a facade's
    keyword arguments and the client's defaults.
    """

    max_concurrency: int
    deadline: float | None = None
    use_client_deadline: bool = True
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    rate_limiter: Any = None
    progress: bool = False
    on_progress: ProgressCallback | None = None
    model: str = ""
    batch_size: int = MAX_BATCH_SIZE
    too_long: TooLong = "fail"
    endpoint_params: tuple[tuple[str, Any], ...] = ()
    instructions: str | None = None
    max_words: int | None = None
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    deadline_per_item: float | None = None

    @classmethod
    def _common(cls, options: dict[str, Any], default_concurrency: int) -> dict[str, Any]:
        concurrency = options.get("max_concurrency")
        limiter = options.get("rate_limiter")
        if limiter is not None and not (hasattr(limiter, "reserve") and hasattr(limiter, "pause")):
            raise TypeError(
                f"rate_limiter must have reserve() and pause() (a RateLimiter), "
                f"not {type(limiter).__name__}"
            )
        progress = options.get("progress", False)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, not {type(progress).__name__}")
        on_progress = options.get("on_progress")
        check_callable("on_progress", on_progress)
        deadline = options.get("deadline")
        # Client-side budgets are checked where every limiter checks its own (late import: the
        # limiters' arithmetic depends on this module).
        from ._limits._budget import Budget

        budget = Budget.of(
            options.get("requests_per_minute"), options.get("tokens_per_minute"), 60.0
        )
        return {
            "max_concurrency": (
                default_concurrency
                if concurrency is None
                else check_int("max_concurrency", concurrency)
            ),
            "deadline": check_deadline(deadline),
            "use_client_deadline": deadline is None,
            "requests_per_minute": budget.requests_per_minute,
            "tokens_per_minute": budget.tokens_per_minute,
            "rate_limiter": limiter,
            "progress": progress,
            "on_progress": on_progress,
        }

    @classmethod
    def for_embeddings(
        cls, options: dict[str, Any], *, default_model: str, default_concurrency: int
    ) -> BatchOptions:
        """Validate ``embed_batch``'s keyword arguments."""
        _unknown("embed_batch", options, EmbedBatchOptions)
        batch_size = options.get("batch_size")
        params = tuple(
            (name, options[name])
            for name in (*_ENDPOINT_PARAMS, *_REQUEST_OPTIONS)
            if options.get(name) is not None
        )
        return cls(
            **cls._common(options, default_concurrency),
            model=check_model(options.get("model") or default_model),
            batch_size=MAX_BATCH_SIZE if batch_size is None else check_batch_size(batch_size),
            too_long=check_too_long(options.get("too_long", "fail")),
            endpoint_params=params,
        )

    @classmethod
    def for_summaries(
        cls, options: dict[str, Any], *, default_model: str, default_concurrency: int
    ) -> BatchOptions:
        """Validate ``summarize_batch``'s keyword arguments."""
        _unknown("summarize_batch", options, SummarizeBatchOptions)
        limit = options.get("max_input_tokens")
        max_words = options.get("max_words")
        instructions = options.get("instructions")
        if instructions is not None and (
            not isinstance(instructions, str) or not instructions.strip()
        ):
            raise TypeError(f"instructions must be a non-empty string, got {instructions!r}")
        return cls(
            **cls._common(options, default_concurrency),
            model=check_model(options.get("model") or default_model),
            instructions=instructions,
            max_words=None if max_words is None else check_int("max_words", max_words),
            max_input_tokens=(
                DEFAULT_MAX_INPUT_TOKENS
                if limit is None
                else check_int("max_input_tokens", limit, minimum=16)
            ),
        )

    @classmethod
    def for_map(cls, options: dict[str, Any], *, default_concurrency: int) -> BatchOptions:
        """Validate ``map``'s keyword arguments."""
        _unknown("map", options, MapOptions)
        common = cls._common(
            {
                key: options[key]
                for key in ("max_concurrency", "progress", "on_progress")
                if key in options
            },
            default_concurrency,
        )
        return cls(
            **common,
            deadline_per_item=check_positive(
                "deadline_per_item", options.get("deadline_per_item"), allow_none=True
            ),
        )
