"""One logical call: its retry state, from the first attempt to the error the caller sees.

:class:`CallState` turns :func:`._retry.decide` into tenacity strategies (stop, wait, the error
callback) and produces the error the caller sees. The facades carry the waiting and the I/O out;
a call that succeeds at its first attempt never enters tenacity at all.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import openai
import tenacity

from ._config import RetryPolicy
from ._exceptions import DeadlineExceeded
from ._messages import connection_cause, seconds
from ._records import CallDetails, CallSink, RetryDetails, StatsCounter
from ._retry import Action, AttemptDeadline, Decision, classify, decide

__all__ = ["CallState", "add_note"]

logger = logging.getLogger("resilient_llm")

T = TypeVar("T")


def add_note(exc: BaseException, note: str) -> None:
    """``BaseException.add_note`` where it exists (3.11+); the same ``__notes__`` list on 3.10."""
    adder = getattr(exc, "add_note", None)
    if adder is not None:
        adder(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None) or []
        exc.__notes__ = [*notes, note]  # type: ignore[attr-defined]


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _request_path(exc: BaseException) -> str | None:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    path = getattr(url, "path", None)
    return path if isinstance(path, str) and path else None


@dataclass(slots=True)
class _Attempt:
    error_type: str
    status: int | None
    sleep: float


class CallState:
    """One logical call: attempts, the decision after each failure, and the error to raise.

    A fresh instance per call, so statistics stay right under concurrency (stamina does the same).

    Args:
        operation: what is called, for logs and hooks (``None``: named after the endpoint the
            first failed request reached).
        policy: the retry policy.
        deadline: wall-clock budget in seconds (``None``: none).
        outer_deadline_at: a tighter monotonic deadline inherited from the enclosing scope.
        stats: the client's counters.
        sink: the batch this call works for, if any.
        limiters: rate limiters to book each attempt with.
        tokens: the request's token cost, for the limiters.
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
        "limiters",
        "operation",
        "policy",
        "sink",
        "started",
        "stats",
        "tokens",
    )

    def __init__(
        self,
        operation: str | None,
        *,
        policy: RetryPolicy,
        deadline: float | None,
        outer_deadline_at: float | None = None,
        stats: StatsCounter | None = None,
        sink: CallSink | None = None,
        limiters: tuple[Any, ...] = (),
        tokens: int = 0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.operation = operation
        self.policy = policy
        self._clock = clock
        self._rand = rand
        self.started = clock()
        deadline_at = None if deadline is None else self.started + deadline
        if outer_deadline_at is not None and (
            deadline_at is None or outer_deadline_at < deadline_at
        ):
            # Called inside a tighter budget (a map item, a call() function): that one wins.
            deadline_at = outer_deadline_at
        self.deadline_at = deadline_at
        self.deadline = None if deadline_at is None else max(0.0, deadline_at - self.started)
        self.history: list[_Attempt] = []
        self.attempts = 0
        self.last_error: BaseException | None = None
        self.stats = stats
        self.sink = sink
        self.limiters = limiters
        self.tokens = tokens
        self._decision: Decision | None = None
        self._decided_attempt = 0

    @property
    def name(self) -> str:
        """The operation, or the endpoint path its last failure reached, or ``"call"``."""
        if self.operation:
            return self.operation
        path = None if self.last_error is None else _request_path(self.last_error)
        return path or "call"

    def remaining(self) -> float | None:
        """Seconds left before the deadline (``None``: no deadline)."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    # -- pacing --------------------------------------------------------------------------

    def check_pace(self, wait: float) -> None:
        """Raise if waiting ``wait`` seconds for the rate limiters would cross the deadline."""
        remaining = self.remaining()
        if remaining is not None and wait + 0.05 > remaining:
            raise AttemptDeadline(
                f"the rate limit needs a wait of {seconds(wait)} and only "
                f"{seconds(max(0.0, remaining))} of the deadline were left"
            )

    # -- the fast path ---------------------------------------------------------------------

    def replay(self, first: BaseException, attempt: Callable[[], T]) -> Callable[[], T]:
        """``attempt`` for tenacity, after a first attempt already failed with ``first``.

        The first call re-raises ``first`` (no I/O) so tenacity decides about it; later calls
        make real attempts. So a call that succeeds at once never builds a tenacity loop.
        """
        pending = [first]

        def again() -> T:
            if pending:
                raise pending.pop()
            return attempt()

        return again

    def areplay(
        self, first: BaseException, attempt: Callable[[], Awaitable[T]]
    ) -> Callable[[], Awaitable[T]]:
        """The async twin of :meth:`replay` (tenacity awaits only coroutine functions)."""
        pending = [first]

        async def again() -> T:
            if pending:
                raise pending.pop()
            return await attempt()

        return again

    # -- tenacity strategies -------------------------------------------------------------

    def decision(self, retry_state: tenacity.RetryCallState) -> Decision:
        """The decision about the attempt tenacity is asking about (made once per attempt)."""
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
        self.history.append(_Attempt(type(exc).__name__, status_of(exc), decision.sleep))
        if self.sink is not None and not isinstance(exc, AttemptDeadline):
            self.sink.failed(exc, decision, retry_state.attempt_number)
        return decision

    def stop(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.decision(retry_state).action is not Action.RETRY

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        return self.decision(retry_state).sleep

    def give_up(self, retry_state: tenacity.RetryCallState) -> NoReturn:
        """tenacity's ``retry_error_callback``: raise the error the caller should see."""
        outcome = retry_state.outcome
        assert outcome is not None
        exc = outcome.exception()
        assert exc is not None
        raise self.final_error(exc)

    def tenacity_kwargs(self) -> dict[str, Any]:
        """The arguments shared by ``Retrying`` and ``AsyncRetrying``.

        Only ``Exception`` is retried: cancellation and ``KeyboardInterrupt`` pass straight
        through.
        """
        return {
            "retry": tenacity.retry_if_exception_type(Exception),
            "stop": self.stop,
            "wait": self.wait,
            "retry_error_callback": self.give_up,
            "reraise": True,
        }

    def retry_details(self, retry_state: tenacity.RetryCallState) -> RetryDetails:
        """Record the retry about to happen: counters, the WARNING log line, the hook record."""
        outcome = retry_state.outcome
        assert outcome is not None
        exc = outcome.exception()
        assert exc is not None
        decision = self.decision(retry_state)
        verdict = decision.classification
        details = RetryDetails(
            operation=self.name,
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
            "%s: attempt %d of %d failed (%s: %s); retrying in %s",
            details.operation,
            details.attempt,
            self.policy.max_attempts,
            details.error_type,
            verdict.reason,
            seconds(details.sleep),
        )
        return details

    def pause_for(self, error: BaseException) -> float | None:
        """How long every sharer of the rate limiters must hold back after ``error``: a 429's
        ``Retry-After``, whether or not this call retries."""
        if not self.limiters:
            return None
        verdict = classify(error)
        return verdict.retry_after if verdict.rate_limited and verdict.retryable else None

    # -- the error the caller sees -------------------------------------------------------

    def _attempts_note(self) -> str:
        parts = []
        for number, record in enumerate(self.history, start=1):
            status = f" {record.status}" if record.status is not None else ""
            waited = f", waited {seconds(record.sleep)}" if number < len(self.history) else ""
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
            reason = str(exc) if isinstance(exc, AttemptDeadline) and str(exc) else decision.reason
            error = DeadlineExceeded(
                self.name,
                deadline=self.deadline,
                elapsed=elapsed,
                attempts=attempts,
                reason=reason,
            )
            if self.history:
                add_note(error, f"resilient_llm: attempts: {self._attempts_note()}")
            error.__cause__ = exc if not isinstance(exc, AttemptDeadline) else self.last_error
            return error
        reason = decision.reason if decision is not None else "not retryable"
        if isinstance(exc, openai.APIConnectionError):
            request = getattr(exc, "request", None)
            url = getattr(request, "url", None)
            if url is not None:
                cause = connection_cause(exc)
                because = f"; cause: {cause}" if cause else ""
                add_note(exc, f"resilient_llm: the request went to {url}{because}")
        if attempts > 1 or (decision is not None and decision.classification.status == 429):
            add_note(
                exc,
                f"resilient_llm: {self.name} failed after {attempts} "
                f"attempt{'s' if attempts != 1 else ''} in {seconds(elapsed)} ({reason}); "
                f"attempts: {self._attempts_note()}",
            )
        return exc

    def details(self, error: BaseException | None, chunks: int | None = None) -> CallDetails:
        return CallDetails(
            operation=self.name,
            attempts=self.attempts,
            elapsed=self.elapsed(),
            ok=error is None,
            error_type=None if error is None else type(error).__name__,
            status=None if error is None else status_of(error),
            chunks=chunks,
        )
