"""What the options of a Ray actor mean: which build its client, its share of the rate budget,
the size of its pool. Checked on the driver before a job starts, and in each actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._config import check_positive
from .._limits import LocalRateLimiter

__all__ = [
    "ACTOR_OPTIONS",
    "CLIENT_OPTIONS",
    "Actors",
    "actor_rate_limiter",
    "check_dataset_options",
    "check_rate_options",
    "pool_bounds",
]

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
ACTOR_OPTIONS = frozenset(
    {"requests_per_minute", "tokens_per_minute", "rate_limiter", "rate_window"}
)

Actors = int | tuple[int, int] | tuple[int, int, int]


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
    check_rate_options(requests_per_minute, tokens_per_minute, rate_limiter)
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
    _, share = pool_bounds(actors)
    check_positive("rate_window", window)
    return LocalRateLimiter(
        requests_per_minute=None if requests_per_minute is None else requests_per_minute / share,
        tokens_per_minute=None if tokens_per_minute is None else tokens_per_minute / share,
        window=window,
    )


def check_dataset_options(
    actors: object,
    rows_per_batch: object,
    batch_options: frozenset[str],
    options: Mapping[str, Any],
) -> tuple[int, int]:
    """Check the options of a ``*_dataset`` call; ``(min, max)`` of its actor pool."""
    low, high = pool_bounds(actors)
    if (
        isinstance(rows_per_batch, bool)
        or not isinstance(rows_per_batch, int)
        or rows_per_batch < 1
    ):
        raise ValueError(f"rows_per_batch must be an int >= 1, got {rows_per_batch!r}")
    unknown = sorted(set(options) - CLIENT_OPTIONS - batch_options - ACTOR_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected option {unknown[0]!r}")
    check_rate_options(
        options.get("requests_per_minute"),
        options.get("tokens_per_minute"),
        options.get("rate_limiter"),
    )
    return low, high


def check_rate_options(
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


def pool_bounds(actors: object) -> tuple[int, int]:
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
