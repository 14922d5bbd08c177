"""Retry decisions: no I/O, shared by the sync and async facades.

This module plays tenacity's ``BaseRetrying.iter``: after each failed attempt :func:`decide`
answers "retry after N seconds", "give up and raise the original error" or "give up: the deadline
is spent". :mod:`._call` hands these decisions to ``tenacity.Retrying`` / ``AsyncRetrying`` as
strategies; the facades only carry out the waiting and the I/O.

It is also the one place that says what an error means beyond one call: whether it is a failure
to connect at all (:func:`is_connect_failure`) and whether every further request of a batch would
meet it too (:func:`ends_batch`).
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import openai

from ._config import RetryPolicy
from ._exceptions import InvalidResponse, ServerUnreachable
from ._http import httpx
from ._messages import seconds

__all__ = [
    "RETRYABLE_STATUSES",
    "Action",
    "AttemptDeadline",
    "Classification",
    "Decision",
    "backoff_delay",
    "classify",
    "decide",
    "ends_batch",
    "is_connect_failure",
    "parse_retry_after",
]

# "Try again" statuses: request timeout, lock conflict, rate limit, transient server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

# Below this much budget an attempt cannot plausibly finish; failing now is more honest.
MIN_ATTEMPT_BUDGET = 0.05


class AttemptDeadline(Exception):
    """Internal: the async cancel scope cut an attempt off at the call's deadline."""


@dataclass(frozen=True, slots=True)
class Classification:
    """What an error means for retrying."""

    retryable: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None
    rate_limited: bool = False
    timeout: bool = False


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date. Returns ``None`` when absent or
    unparseable. ``now`` is wall-clock time (``time.time()``), for the HTTP-date form.
    """
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            wait = float(value) / divisor
        except ValueError:
            continue
        if math.isnan(wait):
            continue
        return max(0.0, wait)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or parsed.tzinfo is None:  # pragma: no cover - defensive: naive dates
        return None
    wall = time.time() if now is None else now
    return max(0.0, parsed.timestamp() - wall)


def error_code(exc: BaseException) -> str | None:
    """The ``code`` (or ``type``) of an OpenAI-style error body, if any."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            for key in ("code", "type"):
                code = error.get(key)
                if isinstance(code, str):
                    return code
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException, *, now: float | None = None) -> Classification:
    """Decide whether ``exc`` is worth another attempt (SPEC §4)."""
    if isinstance(exc, AttemptDeadline):
        return Classification(False, "deadline reached during the attempt", timeout=True)
    if isinstance(exc, openai.APITimeoutError):
        return Classification(True, "timed out", timeout=True)
    if isinstance(exc, openai.APIConnectionError):
        return Classification(True, "connection error")
    if isinstance(exc, InvalidResponse):
        return Classification(exc.retryable, "invalid answer")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        retry_after = parse_retry_after(headers, now=now)
        rate_limited = status == 429
        should_retry = headers.get("x-should-retry")
        if should_retry == "false":
            return Classification(False, "server said x-should-retry: false", status)
        if rate_limited and error_code(exc) == "insufficient_quota":
            return Classification(
                False,
                "insufficient_quota: the account is out of credit; retrying cannot help "
                "(check the plan and billing details)",
                status,
                rate_limited=True,
            )
        if should_retry == "true" or status in RETRYABLE_STATUSES:
            return Classification(
                True, f"HTTP {status}", status, retry_after=retry_after, rate_limited=rate_limited
            )
        return Classification(False, f"HTTP {status} is not retryable", status)
    return Classification(False, f"{type(exc).__name__} is not retryable")


def is_connect_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to connect at all: refused, name not resolved, TLS failed.

    A connection reset mid-answer or a timeout is not: something is listening there.
    """
    if not isinstance(exc, openai.APIConnectionError) or isinstance(exc, openai.APITimeoutError):
        return False
    cause: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(8):
        if cause is None:
            return False
        if isinstance(cause, httpx.ConnectError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def ends_batch(exc: BaseException) -> bool:
    """Whether every further request of a batch would meet ``exc`` too, so the batch stops.

    A bad key (401), no permission (403), an unknown model or wrong URL (404), an account out of
    credit (429 ``insufficient_quota``), and a server found unreachable.
    """
    if isinstance(
        exc,
        (
            ServerUnreachable,
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
        ),
    ):
        return True
    return isinstance(exc, openai.RateLimitError) and error_code(exc) == "insufficient_quota"


def backoff_delay(
    retry_number: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential back-off before retry ``retry_number`` (1 for the first retry)."""
    exponent = min(retry_number - 1, 64)  # 2**64 s is already past any max_delay
    ceiling = min(policy.max_delay, policy.base_delay * 2.0**exponent)
    return rand() * ceiling


class Action(enum.Enum):
    RETRY = "retry"
    RAISE = "raise"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt."""

    action: Action
    sleep: float
    reason: str
    classification: Classification


def decide(
    exc: BaseException,
    attempt: int,
    *,
    policy: RetryPolicy,
    now: float,
    deadline_at: float | None,
    rand: Callable[[], float] = random.random,
    wall_now: float | None = None,
) -> Decision:
    """Decide what follows attempt number ``attempt`` (1-based) failing with ``exc``.

    ``now`` is monotonic time, ``deadline_at`` the monotonic deadline of the call.
    """
    verdict = classify(exc, now=wall_now)
    if isinstance(exc, AttemptDeadline):
        return Decision(Action.DEADLINE, 0.0, verdict.reason, verdict)
    if verdict.timeout and deadline_at is not None and deadline_at - now < MIN_ATTEMPT_BUDGET:
        return Decision(Action.DEADLINE, 0.0, "the last attempt timed out at the deadline", verdict)
    if not verdict.retryable:
        return Decision(Action.RAISE, 0.0, verdict.reason, verdict)
    if attempt >= policy.max_attempts:
        return Decision(
            Action.RAISE, 0.0, f"{verdict.reason}; all {policy.max_attempts} attempts used", verdict
        )
    if verdict.retry_after is not None:
        if verdict.retry_after > policy.max_retry_after:
            return Decision(
                Action.RAISE,
                0.0,
                f"the server asked to retry after {seconds(verdict.retry_after)}, more than "
                f"max_retry_after={seconds(policy.max_retry_after)}",
                verdict,
            )
        sleep = verdict.retry_after
        asked = f"the server asked to wait {seconds(sleep)}"
    else:
        sleep = backoff_delay(attempt, policy, rand)
        asked = f"the next back-off is {seconds(sleep)}"
    if deadline_at is not None and now + sleep + MIN_ATTEMPT_BUDGET > deadline_at:
        left = max(0.0, deadline_at - now)
        return Decision(
            Action.DEADLINE,
            0.0,
            f"{verdict.reason}; {asked} and only {seconds(left)} of the deadline were left",
            verdict,
        )
    return Decision(Action.RETRY, sleep, verdict.reason, verdict)
