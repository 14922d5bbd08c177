"""Retry and deadline decisions: no I/O, shared by the sync and async facades.

This module plays tenacity's ``BaseRetrying.iter``: after each failed attempt it decides
"retry after N seconds", "give up and raise the original error" or "give up: the deadline is
spent". The facades hand these decisions to ``tenacity.Retrying`` / ``AsyncRetrying`` as
strategies and only carry out the waiting and the I/O.
"""

from __future__ import annotations

import contextvars
import email.utils
import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import openai
import tenacity

from ._config import RetryPolicy
from ._exceptions import DeadlineExceeded

__all__ = [
    "CallDetails",
    "CallState",
    "ClientStats",
    "Decision",
    "RetryDetails",
    "StatsCounter",
    "backoff_delay",
    "classify",
    "decide",
    "parse_retry_after",
]

logger = logging.getLogger("resilient_llm")

current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resilient_llm_deadline", default=None
)
"""Monotonic time by which the current attempt must be over (``None``: no deadline).

Set around each attempt; the transports clamp their timeouts to it, and calls made inside it
(``call``'s function, a ``map`` item) inherit it as an outer deadline.
"""

current_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "resilient_llm_cancel", default=None
)
"""Set by sync batch workers: once the event is set, sleeps and socket reads stop early."""

retry_observer: contextvars.ContextVar[Callable[[RetryDetails], None] | None] = (
    contextvars.ContextVar("resilient_llm_retry_observer", default=None)
)
"""Set by batch workers so that retries of calls made for an item are counted in its batch."""

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
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isnan(seconds):
            continue
        return max(0.0, seconds)
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


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
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
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        retry_after = parse_retry_after(headers, now=now)
        rate_limited = status == 429
        should_retry = headers.get("x-should-retry")
        if should_retry == "false":
            return Classification(False, "server said x-should-retry: false", status)
        if rate_limited and _error_code(exc) == "insufficient_quota":
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
        return Decision(Action.DEADLINE, 0.0, "deadline reached", verdict)
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
                f"server asked to retry after {verdict.retry_after:g} s, more than "
                f"max_retry_after={policy.max_retry_after:g} s",
                verdict,
            )
        sleep = verdict.retry_after
    else:
        sleep = backoff_delay(attempt, policy, rand)
    if deadline_at is not None and now + sleep + MIN_ATTEMPT_BUDGET > deadline_at:
        return Decision(
            Action.DEADLINE,
            0.0,
            f"{verdict.reason}; waiting {sleep:.2f} s would cross the deadline",
            verdict,
        )
    return Decision(Action.RETRY, sleep, verdict.reason, verdict)


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """Given to ``on_retry`` hooks before each back-off sleep (the shape of stamina's).

    Attributes:
        operation: the logical call, for example ``"chat.completions"``.
        attempt: the attempt that just failed (1-based).
        error_type: class name of its error.
        status: HTTP status, when the error has one.
        sleep: seconds until the next attempt.
        elapsed: seconds since the call started.
        error: the error itself.
    """

    operation: str
    attempt: int
    error_type: str
    status: int | None
    sleep: float
    elapsed: float
    error: BaseException = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallDetails:
    """Given to ``on_call`` hooks when a logical call ends, successfully or not.

    Attributes:
        operation: the logical call.
        attempts: attempts made.
        elapsed: seconds from start to end.
        ok: whether it returned a result.
        error_type: class name of the error it raised, if any.
        status: HTTP status of that error, if any.
    """

    operation: str
    attempts: int
    elapsed: float
    ok: bool
    error_type: str | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (``client.stats``)."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    deadline_exceeded: int = 0


class StatsCounter:
    """Thread-safe counters behind ``client.stats``."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(ClientStats.__dataclass_fields__, 0)

    def add(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._counts[name] += value

    def snapshot(self) -> ClientStats:
        with self._lock:
            return ClientStats(**self._counts)


@dataclass(slots=True)
class _AttemptRecord:
    error_type: str
    status: int | None
    sleep: float


def add_note(exc: BaseException, note: str) -> None:
    """``BaseException.add_note`` where it exists (3.11+); the same ``__notes__`` list on 3.10."""
    adder = getattr(exc, "add_note", None)
    if adder is not None:
        adder(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None) or []
        exc.__notes__ = [*notes, note]  # type: ignore[attr-defined]


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class CallState:
    """One logical call: the tenacity strategies (stop, wait, error callback) built on ``decide``.

    A fresh instance per call, so statistics stay right under concurrency.
    """

    __slots__ = (
        "_clock",
        "_decided_attempt",
        "_decision",
        "_rand",
        "attempts",
        "deadline",
        "deadline_at",
        "history",
        "last_error",
        "observer",
        "operation",
        "policy",
        "started",
        "stats",
    )

    def __init__(
        self,
        operation: str,
        *,
        policy: RetryPolicy,
        deadline: float | None,
        stats: StatsCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        outer_deadline_at: float | None = None,
        observer: Callable[[RetryDetails], None] | None = None,
    ) -> None:
        self.operation = operation
        self.policy = policy
        self._clock = clock
        self._rand = rand
        self.started = clock()
        self.observer = observer
        deadline_at = None if deadline is None else self.started + deadline
        if outer_deadline_at is not None and (
            deadline_at is None or outer_deadline_at < deadline_at
        ):
            # Called inside a tighter budget (a map item, a call() function): that one wins.
            deadline_at = outer_deadline_at
        self.deadline_at = deadline_at
        self.deadline = None if deadline_at is None else max(0.0, deadline_at - self.started)
        self.history: list[_AttemptRecord] = []
        self.attempts = 0  # started attempts; the shells count them
        self.last_error: BaseException | None = None
        self.stats = stats
        self._decision: Decision | None = None
        self._decided_attempt = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    # -- tenacity strategies -------------------------------------------------------------

    def _decide(self, retry_state: tenacity.RetryCallState) -> Decision:
        # tenacity asks ``wait`` before ``stop`` (9.x) but may change the order: decide once per
        # attempt, whichever asks first.
        decision = self._decision
        if decision is not None and self._decided_attempt == retry_state.attempt_number:
            return decision
        outcome = retry_state.outcome
        assert outcome is not None
        exc = outcome.exception()
        assert exc is not None
        decision = decide(
            exc,
            retry_state.attempt_number,
            policy=self.policy,
            now=self._clock(),
            deadline_at=self.deadline_at,
            rand=self._rand,
        )
        self._decision = decision
        self._decided_attempt = retry_state.attempt_number
        if not isinstance(exc, AttemptDeadline):
            self.last_error = exc
        self.history.append(_AttemptRecord(type(exc).__name__, _status(exc), decision.sleep))
        return decision

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._decide(retry_state).action is not Action.RETRY

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        return self._decide(retry_state).sleep

    def retry_details(self, retry_state: tenacity.RetryCallState) -> RetryDetails:
        """Record the retry about to happen: counters, the WARNING log line, the hook record."""
        outcome = retry_state.outcome
        assert outcome is not None
        exc = outcome.exception()
        assert exc is not None
        decision = self._decide(retry_state)
        verdict = decision.classification
        details = RetryDetails(
            operation=self.operation,
            attempt=retry_state.attempt_number,
            error_type=type(exc).__name__,
            status=verdict.status,
            sleep=decision.sleep,
            elapsed=self.elapsed(),
            error=exc,
        )
        if self.stats is not None:
            self.stats.add(
                retries=1, rate_limited=int(verdict.rate_limited), timeouts=int(verdict.timeout)
            )
        logger.warning(
            "%s: attempt %d of %d failed (%s: %s); retrying in %.2f s",
            self.operation,
            details.attempt,
            self.policy.max_attempts,
            details.error_type,
            verdict.reason,
            details.sleep,
        )
        if self.observer is not None:
            self.observer(details)
        return details

    def give_up(self, retry_state: tenacity.RetryCallState) -> NoReturn:
        """tenacity's ``retry_error_callback``: raise the error the caller should see."""
        outcome = retry_state.outcome
        assert outcome is not None
        exc = outcome.exception()
        assert exc is not None
        raise self.final_error(exc)

    # -- the error the caller sees -------------------------------------------------------

    def _attempts_note(self) -> str:
        parts = []
        for number, record in enumerate(self.history, start=1):
            status = f" {record.status}" if record.status is not None else ""
            waited = f", waited {record.sleep:.2f} s" if number < len(self.history) else ""
            parts.append(f"#{number} {record.error_type}{status}{waited}")
        return "; ".join(parts)

    def final_error(self, exc: BaseException) -> BaseException:
        """The exception to raise for a call that failed for good with ``exc``.

        Our own deadline becomes :class:`DeadlineExceeded` chained to the last real error;
        anything else is the original exception, unchanged in type, with a note of the attempts.
        """
        decision = self._decision
        attempts = self.attempts
        elapsed = self.elapsed()
        if self.stats is not None:
            self.stats.add(
                deadline_exceeded=int(decision is not None and decision.action is Action.DEADLINE),
                rate_limited=int(decision is not None and decision.classification.rate_limited),
                timeouts=int(decision is not None and decision.classification.timeout),
            )
        if decision is not None and decision.action is Action.DEADLINE:
            assert self.deadline is not None
            error = DeadlineExceeded(
                self.operation, deadline=self.deadline, elapsed=elapsed, attempts=attempts
            )
            add_note(error, f"resilient_llm: {decision.reason}; attempts: {self._attempts_note()}")
            error.__cause__ = exc if not isinstance(exc, AttemptDeadline) else self.last_error
            return error
        reason = decision.reason if decision is not None else "not retryable"
        if attempts > 1 or (decision is not None and decision.classification.status == 429):
            add_note(
                exc,
                f"resilient_llm: {self.operation} failed after {attempts} "
                f"attempt{'s' if attempts != 1 else ''} in {elapsed:.2f} s ({reason}); "
                f"attempts: {self._attempts_note()}",
            )
        return exc

    def details(self, error: BaseException | None) -> CallDetails:
        return CallDetails(
            operation=self.operation,
            attempts=self.attempts,
            elapsed=self.elapsed(),
            ok=error is None,
            error_type=None if error is None else type(error).__name__,
            status=None if error is None else _status(error),
        )


def retrying_kwargs(state: CallState) -> dict[str, Any]:
    """The tenacity arguments shared by ``Retrying`` and ``AsyncRetrying``.

    Only ``Exception`` is retried: cancellation and ``KeyboardInterrupt`` pass straight through.
    """
    return {
        "retry": tenacity.retry_if_exception_type(Exception),
        "stop": state.stop,
        "wait": state.wait,
        "retry_error_callback": state.give_up,
        "reraise": True,
    }
