"""The pure retry/deadline core: table-driven, with a frozen clock and fixed jitter."""

from __future__ import annotations

import email.utils

import openai
import pytest

from resilient_llm import DeadlineExceeded, RetryPolicy
from resilient_llm._call import CallState
from resilient_llm._http import httpx
from resilient_llm._retry import (
    Action,
    AttemptDeadline,
    backoff_delay,
    classify,
    decide,
    parse_retry_after,
)
from tests import sdk_objects
from tests.sdk_objects import connection_error, timeout_error

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0, max_retry_after=10.0)


def status_error(
    status: int, headers: dict[str, str] | None = None, body: object = None
) -> openai.APIStatusError:
    return sdk_objects.status_error(status, body=body, headers=headers)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms is more precise: preferred
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": email.utils.formatdate(NOW + 7, usegmt=True)}, 7.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "nan"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "headers", "retryable"),
    [
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (502, {}, True),
        (503, {}, True),
        (504, {}, True),
        (400, {}, False),
        (401, {}, False),
        (403, {}, False),
        (404, {}, False),
        (422, {}, False),
        (501, {}, False),
        (400, {"x-should-retry": "true"}, True),
        (503, {"x-should-retry": "false"}, False),
    ],
)
def test_classify_status(status: int, headers: dict[str, str], retryable: bool) -> None:
    verdict = classify(status_error(status, headers))
    assert verdict.retryable is retryable
    assert verdict.status == status
    assert verdict.rate_limited is (status == 429)


def test_insufficient_quota_is_never_retried() -> None:
    body = {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "x"}}
    verdict = classify(status_error(429, {"retry-after": "1"}, body))
    assert not verdict.retryable
    assert "insufficient_quota" in verdict.reason


def test_classify_transport_errors() -> None:
    assert classify(timeout_error()).retryable
    assert classify(timeout_error()).timeout
    assert classify(connection_error()).retryable
    assert not classify(ValueError("bug")).retryable
    assert not classify(AttemptDeadline()).retryable


@pytest.mark.parametrize(
    ("retry_number", "rand", "expected"),
    [(1, 1.0, 0.5), (2, 1.0, 1.0), (3, 1.0, 2.0), (4, 1.0, 4.0), (9, 1.0, 4.0), (3, 0.25, 0.5)],
)
def test_backoff_is_full_jitter_exponential_capped(
    retry_number: int, rand: float, expected: float
) -> None:
    assert backoff_delay(retry_number, POLICY, lambda: rand) == pytest.approx(expected)


def test_backoff_survives_huge_retry_numbers() -> None:
    assert backoff_delay(10_000, POLICY, lambda: 1.0) == POLICY.max_delay


@pytest.mark.parametrize(
    ("exc", "attempt", "deadline_at", "action", "sleep"),
    [
        (status_error(500), 1, None, Action.RETRY, 0.5),
        (status_error(500), 4, None, Action.RAISE, 0.0),  # attempts used up
        (status_error(400), 1, None, Action.RAISE, 0.0),
        (status_error(429, {"retry-after": "2"}), 1, None, Action.RETRY, 2.0),
        (status_error(429, {"retry-after": "11"}), 1, None, Action.RAISE, 0.0),  # > max_retry_after
        (status_error(429, {"retry-after": "5"}), 1, 103.0, Action.DEADLINE, 0.0),  # crosses it
        (status_error(429, {"retry-after": "2"}), 1, 103.0, Action.RETRY, 2.0),
        (timeout_error(), 1, 100.01, Action.DEADLINE, 0.0),  # budget spent: our deadline
        (timeout_error(), 1, 150.0, Action.RETRY, 0.5),  # a per-attempt timeout: retried
        (AttemptDeadline(), 1, 100.0, Action.DEADLINE, 0.0),
    ],
)
def test_decide(
    exc: BaseException, attempt: int, deadline_at: float | None, action: Action, sleep: float
) -> None:
    decision = decide(
        exc, attempt, policy=POLICY, now=100.0, deadline_at=deadline_at, rand=lambda: 1.0
    )
    assert decision.action is action
    assert decision.sleep == pytest.approx(sleep, abs=0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_final_error_keeps_type_and_lists_attempts() -> None:
    clock = FakeClock()
    state = CallState("embeddings", policy=POLICY, deadline=None, clock=clock, rand=lambda: 1.0)
    state.attempts = 1
    error = status_error(503)
    result = state.final_error(error)
    assert result is error
    assert not getattr(error, "__notes__", None)  # one attempt, nothing worth a note

    state.attempts = 3
    result = state.final_error(error)
    assert isinstance(result, openai.InternalServerError)
    assert "after 3 attempts" in result.__notes__[0]


def test_deadline_error_is_chained_and_named() -> None:
    clock = FakeClock()
    state = CallState("chat.completions", policy=POLICY, deadline=2.0, clock=clock)
    state.attempts = 1
    clock.now = 2.0
    error = timeout_error()
    state._decision = decide(error, 1, policy=POLICY, now=clock.now, deadline_at=state.deadline_at)
    result = state.final_error(error)
    assert isinstance(result, DeadlineExceeded)
    assert isinstance(result, TimeoutError)
    assert result.__cause__ is error
    assert "chat.completions" in str(result)
    assert "1 attempt" in str(result)
    assert "in 2 s" in str(result)  # durations rounded for people
