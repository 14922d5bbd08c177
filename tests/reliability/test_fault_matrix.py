"""Fault matrix: every fault of the testing kit x {sync, asyncio, trio} x {single call, batch}.

One table (`ROWS`) says what each fault must lead to; the four tests below run every row on both
endpoints (embeddings, chat completions) and check it:

- ``recovers``: retried once and succeeded (single: 2 requests; batch: every item succeeded);
  a 200 whose body fails its checks (malformed JSON, an HTML page) is ``InvalidResponse``,
  retried like a 5xx (SPEC §6), so it recovers too;
- ``succeeds``: no retry needed (slow or trickling but within budget);
- ``fails``: failed fast (one request, no retry) with exactly one error type; in a batch that item
  alone fails, unless the error is ``fatal`` for the batch (bad key, no permission, unknown
  model, no quota: SPEC §6), which ends the batch: items not sent fail with that error
  (``attempts=0``, counted in ``stats.not_sent``) and ``result.stopped_by`` names it;
- ``deadline``: ``DeadlineExceeded`` honoured within 0.5 s of the deadline;
- ``deadline_fast``: the server asks to wait longer than the budget left: fails at once (in a
  batch, the requests held behind its Retry-After pause fail at once too, never sent).

One expected outcome per cell: a row names one error type, never a choice of several. In a
batch, every index is accounted for exactly once, checked against the inputs and the server's
request log, and every value against the server's own answer.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import openai
import pytest
from openai.types.chat import ChatCompletion

from resilient_llm import (
    AsyncResilientClient,
    BatchResult,
    DeadlineExceeded,
    ResilientClient,
    RetryPolicy,
)
from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text, embedding_vector

from ._support import (
    assert_accounted_once,
    assert_vector,
    async_client,
    count_tasks,
    settle_tasks,
    sync_client,
)

PATIENT = RetryPolicy(max_attempts=20, base_delay=0.01, max_delay=0.2)
DEADLINE = 1.0  # for the hang and drip rows: short, so that the reduced suite stays fast
SLACK = 0.5  # a deadline must be honoured within half a second
BATCH = [f"matrix document {i}" for i in range(6)]
BATCH_CONCURRENCY = 2
DIMS = 8
TEXT = "matrix text"
# Statuses that may be about an input: a batch may send one probe to tell (SPEC §6).
INPUT_REJECTIONS = (400, 422)


@dataclass(frozen=True)
class Row:
    id: str
    fault: Fault
    expect: str
    error: type[BaseException] | None = None  # exactly this type, for "fails"
    fatal: bool = False  # ends a batch: the items not sent fail with `error`
    slow_on: tuple[str, ...] = ()  # endpoints on which the row runs in the full run only

    def describe(self) -> str:
        """The one expected outcome, as the report shows it."""
        if self.expect != "fails":
            return self.expect
        assert self.error is not None
        return f"{'ends the batch' if self.fatal else 'fails'}: {self.error.__name__}"


PAST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
# Rows whose handling does not depend on the endpoint (the shared retry layer decides) run on
# chat completions in the full run only, to keep the reduced suite fast.
CHAT = ("chat",)

ROWS = [
    Row("429 retry-after 0", Fault.status(429, retry_after=0), "recovers"),
    Row("429 retry-after-ms 50", Fault.status(429, retry_after_ms=50), "recovers", slow_on=CHAT),
    Row(
        "429 retry-after http-date",
        Fault.status(429, retry_after_date=PAST),
        "recovers",
        slow_on=CHAT,
    ),
    Row("408", Fault.status(408), "recovers", slow_on=CHAT),
    Row("409", Fault.status(409), "recovers", slow_on=CHAT),
    Row("500", Fault.status(500), "recovers"),
    Row("502", Fault.status(502), "recovers", slow_on=CHAT),
    Row("503", Fault.status(503), "recovers", slow_on=CHAT),
    Row("504", Fault.status(504), "recovers", slow_on=CHAT),
    Row("400 x-should-retry true", Fault.status(400, should_retry=True), "recovers", slow_on=CHAT),
    Row("reset", Fault.reset(), "recovers"),
    Row("reset after 20 bytes", Fault.reset(after_bytes=20), "recovers"),
    Row("html 502 (proxy page)", Fault.html(502), "recovers"),
    Row("latency 0.1 s", Fault.latency(0.1), "succeeds", slow_on=CHAT),
    Row("drip, no delay", Fault.drip(0.0), "succeeds"),
    Row("400", Fault.status(400), "fails", openai.BadRequestError),
    Row("422", Fault.status(422), "fails", openai.UnprocessableEntityError, slow_on=CHAT),
    Row(
        "503 x-should-retry false",
        Fault.status(503, should_retry=False),
        "fails",
        openai.InternalServerError,
        slow_on=CHAT,
    ),
    Row(
        "503 retry-after 120 > max_retry_after",
        Fault.status(503, retry_after=120),
        "fails",
        openai.InternalServerError,
        slow_on=CHAT,
    ),
    Row("401", Fault.status(401), "fails", openai.AuthenticationError, fatal=True),
    Row("403", Fault.status(403), "fails", openai.PermissionDeniedError, fatal=True, slow_on=CHAT),
    Row("404", Fault.status(404), "fails", openai.NotFoundError, fatal=True, slow_on=CHAT),
    Row(
        "insufficient_quota", Fault.insufficient_quota(), "fails", openai.RateLimitError, fatal=True
    ),
    # SPEC §6: a 200 that fails its checks is InvalidResponse, retried like a 5xx.
    Row("malformed json (200)", Fault.malformed_json(), "recovers"),
    Row("html 200", Fault.html(), "recovers"),
    Row("429 retry-after 10 > deadline left", Fault.status(429, retry_after=10), "deadline_fast"),
    Row("hang", Fault.hang(), "deadline", slow_on=CHAT),
    Row("drip 0.2 s/byte", Fault.drip(0.2), "deadline", slow_on=("embeddings",)),
]


def _cases() -> list[Any]:
    cases = []
    for row in ROWS:
        for endpoint in ("embeddings", "chat"):
            marks: list[Any] = []
            if endpoint in row.slow_on:
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(row, endpoint, id=f"{row.id}-{endpoint}", marks=marks))
    return cases


def _deadline(row: Row) -> float:
    return {"deadline": DEADLINE, "deadline_fast": 5.0}.get(row.expect, 20.0)


# -- what each shape must show -------------------------------------------------------------------


def check_single(
    row: Row, endpoint: str, outcome: Any, elapsed: float, server: MockOpenAIServer
) -> str:
    """Assert the outcome of one call; return a short description for the report."""
    requests = server.stats.total_requests
    if row.expect in ("recovers", "succeeds"):
        if isinstance(outcome, BaseException):
            raise AssertionError(f"expected success, got {outcome!r}") from outcome
        if endpoint == "embeddings":
            assert_vector(outcome, TEXT, DIMS)
        else:
            assert isinstance(outcome, ChatCompletion), type(outcome)
            assert outcome.choices[0].message.content == chat_reply_text(TEXT)
        assert requests == (2 if row.expect == "recovers" else 1)
        return f"ok after {requests} req" if row.expect == "recovers" else "ok, 1 req"
    assert isinstance(outcome, BaseException), f"expected an error, got {type(outcome).__name__}"
    if row.expect == "fails":
        assert type(outcome) is row.error, repr(outcome)
        assert requests == 1, "a non-retryable error was retried"
        assert elapsed < 1.0
        if isinstance(outcome, openai.APIStatusError) and row.fault.kind == "respond":
            assert outcome.status_code == row.fault.status_code
        return f"{type(outcome).__name__}, 1 req"
    assert type(outcome) is DeadlineExceeded, repr(outcome)
    assert isinstance(outcome, TimeoutError)
    if row.expect == "deadline_fast":
        assert requests == 1
        assert elapsed < SLACK
        return f"DeadlineExceeded at once ({elapsed:.2f} s)"
    assert DEADLINE - 0.05 <= elapsed <= DEADLINE + SLACK
    return f"DeadlineExceeded at {elapsed:.2f} s"


def _value_of(endpoint: str) -> Callable[[int], object]:
    if endpoint == "embeddings":
        return lambda index: embedding_vector(BATCH[index], DIMS)
    return lambda index: chat_reply_text(BATCH[index])


def check_batch(
    row: Row, endpoint: str, result: BatchResult[Any], elapsed: float, server: MockOpenAIServer
) -> str:
    total = len(BATCH)
    path = "/v1/embeddings" if endpoint == "embeddings" else "/v1/chat/completions"
    assert_accounted_once(result, BATCH, value_of=_value_of(endpoint), server=server, path=path)
    requests = server.stats.total_requests
    failures = result.failures
    if row.expect in ("recovers", "succeeds"):
        assert result.ok, result.summary()
        assert requests == total + (1 if row.expect == "recovers" else 0)
        return f"{total}/{total} ok, {requests} req"
    assert row.expect != "fails" or row.error is not None
    if row.expect == "fails" and row.fatal:
        assert row.error is not None
        name = row.error.__name__
        assert failures, "a fatal error did not fail the batch"
        assert {f.error_type for f in failures} == {name}, result.summary()
        assert requests <= BATCH_CONCURRENCY + 1, "kept sending after a fatal error"
        unsent = [f for f in failures if f.attempts == 0]
        assert unsent, "the batch did not stop: every item was sent"
        assert getattr(result.stats, "not_sent", None) == len(unsent), result.stats
        stopped = getattr(result, "stopped_by", None)
        assert stopped is not None, "result.stopped_by is not set"
        assert stopped.error_type == name, stopped
        return f"{len(failures)} {name} ({len(unsent)} unsent), {requests} req"
    if row.expect == "deadline_fast":
        # The server asked every caller to wait 10 s (Retry-After pauses the whole batch), and
        # 5 s of deadline were left: the request that met the 429 and those held behind its
        # pause fail at once with DeadlineExceeded, the held ones never sent; nothing waits.
        assert {f.error_type for f in failures} == {"DeadlineExceeded"}, result.summary()
        assert [f.attempts for f in failures].count(1) == 1, result.summary()
        assert all(f.attempts in (0, 1) for f in failures), result.summary()
        assert requests <= 1 + BATCH_CONCURRENCY, f"{requests} requests"
        assert requests == len(failures) - result.stats.not_sent + result.stats.succeeded
        assert elapsed <= SLACK, f"batch took {elapsed:.2f} s"
        return (
            f"{result.stats.succeeded} ok, 1 DeadlineExceeded + {result.stats.not_sent} held "
            f"back unsent, batch {elapsed:.2f} s"
        )
    assert len(failures) == 1, result.summary()
    failure = failures[0]
    if row.expect == "fails":
        assert row.error is not None
        assert failure.error_type == row.error.__name__, failure
        assert failure.attempts == 1
        probe = 1 if row.fault.status_code in INPUT_REJECTIONS else 0
        assert total <= requests <= total + probe, f"{requests} requests"
        if row.fault.kind == "respond":
            assert failure.status == row.fault.status_code
        return f"{total - 1} ok + 1 {failure.error_type}, {requests} req"
    assert failure.error_type == "DeadlineExceeded"
    limit = SLACK if row.expect == "deadline_fast" else DEADLINE + SLACK
    assert elapsed <= limit, f"batch took {elapsed:.2f} s"
    return f"{total - 1} ok + 1 DeadlineExceeded, batch {elapsed:.2f} s"


# -- the four tests --------------------------------------------------------------------------------


def _record(figures: Callable[..., None], row: Row, endpoint: str, runner: str, shape: str) -> Any:
    """Declare the cell (so that a failing or xfailed one shows too); returns the reporter."""
    figures(
        section="matrix",
        fault=row.id,
        endpoint=endpoint,
        runner=runner,
        shape=shape,
        expect=row.describe(),
    )

    def done(observed: str) -> None:
        figures(section="matrix_observed", observed=observed)

    return done


def _trim(row: Row, runner: str, full: bool) -> None:
    """The reduced suite runs the 1 s deadline rows on sync and asyncio; trio in the full run
    (tests/test_deadlines.py covers trio deadlines in CI as well)."""
    if runner == "trio" and row.expect == "deadline" and not full:
        pytest.skip("slow row: trio runs it in the full run")


def _client_kwargs(row: Row) -> dict[str, Any]:
    return {"deadline": _deadline(row)}


@pytest.mark.parametrize(("row", "endpoint"), _cases())
def test_single_call_sync(
    row: Row, endpoint: str, server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    report = _record(figures, row, endpoint, "sync", "single")
    server.script(row.fault)
    with sync_client(server.base_url, **_client_kwargs(row)) as client:
        started = time.monotonic()
        outcome: Any
        try:
            outcome = _call_sync(client, endpoint)
        except Exception as exc:
            outcome = exc
        elapsed = time.monotonic() - started
    report(check_single(row, endpoint, outcome, elapsed, server))


@pytest.mark.anyio
@pytest.mark.parametrize(("row", "endpoint"), _cases())
async def test_single_call_async(
    row: Row,
    endpoint: str,
    server: MockOpenAIServer,
    figures: Callable[..., None],
    anyio_backend: str,
    full: bool,
) -> None:
    _trim(row, anyio_backend, full)
    report = _record(figures, row, endpoint, anyio_backend, "single")
    tasks_before = count_tasks()
    server.script(row.fault)
    async with async_client(server.base_url, **_client_kwargs(row)) as client:
        started = time.monotonic()
        outcome: Any
        try:
            outcome = await _call_async(client, endpoint)
        except Exception as exc:
            outcome = exc
        elapsed = time.monotonic() - started
    assert await settle_tasks(tasks_before) <= tasks_before, "tasks left behind"
    report(check_single(row, endpoint, outcome, elapsed, server))


@pytest.mark.parametrize(("row", "endpoint"), _cases())
def test_batch_sync(
    row: Row, endpoint: str, server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    report = _record(figures, row, endpoint, "sync", "batch")
    server.script(row.fault)
    with sync_client(server.base_url, **_client_kwargs(row)) as client:
        started = time.monotonic()
        if endpoint == "embeddings":
            result: BatchResult[Any] = client.embed_batch(
                BATCH, batch_size=1, max_concurrency=BATCH_CONCURRENCY, dimensions=DIMS
            )
        else:
            result = client.summarize_batch(BATCH, max_concurrency=BATCH_CONCURRENCY)
        elapsed = time.monotonic() - started
    report(check_batch(row, endpoint, result, elapsed, server))


@pytest.mark.anyio
@pytest.mark.parametrize(("row", "endpoint"), _cases())
async def test_batch_async(
    row: Row,
    endpoint: str,
    server: MockOpenAIServer,
    figures: Callable[..., None],
    anyio_backend: str,
    full: bool,
) -> None:
    _trim(row, anyio_backend, full)
    report = _record(figures, row, endpoint, anyio_backend, "batch")
    tasks_before = count_tasks()
    server.script(row.fault)
    async with async_client(server.base_url, **_client_kwargs(row)) as client:
        started = time.monotonic()
        if endpoint == "embeddings":
            result: BatchResult[Any] = await client.embed_batch(
                BATCH, batch_size=1, max_concurrency=BATCH_CONCURRENCY, dimensions=DIMS
            )
        else:
            result = await client.summarize_batch(BATCH, max_concurrency=BATCH_CONCURRENCY)
        elapsed = time.monotonic() - started
    assert await settle_tasks(tasks_before) <= tasks_before, "tasks left behind"
    report(check_batch(row, endpoint, result, elapsed, server))


def _call_sync(client: ResilientClient, endpoint: str) -> Any:
    if endpoint == "embeddings":
        return client.embed(TEXT, dimensions=DIMS)
    return client.chat([{"role": "user", "content": TEXT}])


async def _call_async(client: AsyncResilientClient, endpoint: str) -> Any:
    if endpoint == "embeddings":
        return await client.embed(TEXT, dimensions=DIMS)
    return await client.chat([{"role": "user", "content": TEXT}])


# -- the kit's other misbehaviours: a poisoned input, server-side rate limits ----------------------


def _vectors(texts: list[str]) -> Callable[[int], object]:
    return lambda index: embedding_vector(texts[index], DIMS)


def test_poisoned_input_fails_alone_sync(
    server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    texts = [*BATCH[:3], "this one carries the POISON marker", *BATCH[3:]]
    with sync_client(server.base_url) as client:
        result = client.embed_batch(texts, batch_size=7, dimensions=DIMS)
    assert_accounted_once(result, texts, value_of=_vectors(texts), server=server)
    assert [(f.index, f.error_type, f.status) for f in result.failures] == [
        (3, "BadRequestError", 400)
    ]
    requests = server.stats.total_requests
    assert requests > 1, "the rejected request was not split"
    outcome = f"bisected in {requests} requests: 6 ok, item 3 BadRequestError"
    figures(section="kit_extra", case="poison marker in a 7-input request (sync)", outcome=outcome)


@pytest.mark.anyio
async def test_poisoned_input_fails_alone_async(
    server: MockOpenAIServer, anyio_backend: str
) -> None:
    texts = [*BATCH[:3], "this one carries the POISON marker", *BATCH[3:]]
    async with async_client(server.base_url) as client:
        result = await client.embed_batch(texts, batch_size=7, dimensions=DIMS)
    assert_accounted_once(result, texts, value_of=_vectors(texts), server=server)
    assert [(f.index, f.error_type) for f in result.failures] == [(3, "BadRequestError")]


RATE_LIMITED = [
    pytest.param("sync", id="sync"),
    pytest.param("asyncio", id="asyncio", marks=pytest.mark.slow),
    pytest.param("trio", id="trio", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("runner", RATE_LIMITED)
def test_server_side_rate_limit(runner: str, figures: Callable[..., None]) -> None:
    """The server admits 10 requests per 0.5 s window and answers 429 with Retry-After beyond
    that: a 24-request batch waits as told and loses nothing."""
    texts = [f"rate limited {i}" for i in range(24)]
    with MockOpenAIServer(rpm=10, rate_window=0.5, record_texts=True) as server:
        started = time.monotonic()
        if runner == "sync":
            with sync_client(server.base_url, retry=PATIENT) as client:
                result = client.embed_batch(texts, batch_size=1, max_concurrency=4, dimensions=DIMS)
        else:

            async def main() -> BatchResult[Any]:
                async with async_client(server.base_url, retry=PATIENT) as client:
                    return await client.embed_batch(
                        texts, batch_size=1, max_concurrency=4, dimensions=DIMS
                    )

            result = anyio.run(main, backend=runner)
        elapsed = time.monotonic() - started
        refused = server.stats.responses_by_status.get(429, 0)
        assert_accounted_once(result, texts, value_of=_vectors(texts), server=server)
    assert result.ok, result.summary()
    assert elapsed >= 0.9, "24 requests at 10 per 0.5 s cannot take less than a second"
    figures(
        section="kit_extra",
        case=f"server-side rate limit, 10 per 0.5 s ({runner})",
        outcome=f"24/24 ok in {elapsed:.1f} s; the server answered 429 to {refused} requests",
    )
