"""Bad input: each fails with a clear error, and nothing else is lost.

- bad items (None, numbers, bytes, empty and blank strings, a 10 MB string, lone surrogates):
  in a batch they fail alone, never sent, with good items around them succeeding; as a single
  call they raise at once, send nothing, and the client keeps working;
- bad numeric options (NaN, negative, zero, infinite, huge) fail at construction or at the call
  with an error naming the option, before anything is sent; huge but valid values work;
- bad endpoints: an unknown model, a base URL where nothing listens, one that is not HTTP
  (garbage bytes, ``ftp://``), a server answering HTML instead of JSON.
"""

from __future__ import annotations

import gc
import inspect
import math
import re
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import openai
import pytest

from resilient_llm import (
    BatchResult,
    DeadlineExceeded,
    InvalidInput,
    ResilientClient,
    RetryPolicy,
    Timeouts,
)
from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text, embedding_vector

from ..conftest import TEST_KEY
from ._support import (
    FAST_RETRY,
    GarbageServer,
    InvalidResponse,
    assert_accounted_once,
    assert_vector,
    async_client,
    closed_port,
    count_tasks,
    error_chain_text,
    settle_tasks,
    sync_client,
)

DIMS = 8
TEN_MB = "x" * (10 * 1024 * 1024)
NAN = math.nan


# -- bad items -----------------------------------------------------------------------------------


class Bad:
    """A bad item: what it is, the one error type it must fail with, what the message says."""

    def __init__(self, name: str, value: object, error: str, message: str) -> None:
        self.name = name
        self.value = value
        self.error = error
        self.message = re.compile(message, re.IGNORECASE)


# SPEC §6: a non-string, empty, blank or unencodable item fails alone with InvalidInput.
INVALID = "InvalidInput"
UNENCODABLE = INVALID
BAD_ITEMS = [
    Bad("None", None, INVALID, "NoneType"),
    Bad("int", 42, INVALID, "int"),
    Bad("float", 3.5, INVALID, "float"),
    Bad("bool", True, INVALID, "bool"),
    Bad("bytes", b"raw bytes", INVALID, "bytes"),
    Bad("empty string", "", INVALID, "empty"),
    Bad("whitespace", " \n\t ", INVALID, "whitespace|empty"),
    Bad("lone high surrogate", "before \ud800 after", UNENCODABLE, "surrogate"),
    Bad("lone low surrogate", "\udfff", UNENCODABLE, "surrogate"),
]
TOO_LONG = Bad("10 MB string", TEN_MB, INVALID, "token")  # batches only: see below


def _interleave(bad: list[Bad]) -> tuple[list[object], dict[int, Bad], dict[int, str]]:
    texts: list[object] = []
    bad_at: dict[int, Bad] = {}
    good_at: dict[int, str] = {}
    for number, item in enumerate(bad):
        good = f"good document {number}"
        good_at[len(texts)] = good
        texts.append(good)
        bad_at[len(texts)] = item
        texts.append(item.value)
    good_at[len(texts)] = "good document, last"
    texts.append("good document, last")
    return texts, bad_at, good_at


def check_bad_batch(
    result: BatchResult[Any],
    bad_at: dict[int, Bad],
    good_at: dict[int, str],
    server: MockOpenAIServer,
    *,
    embeddings: bool,
) -> None:
    total = len(bad_at) + len(good_at)
    inputs = [bad_at[i].value if i in bad_at else good_at[i] for i in range(total)]

    def value_of(index: int) -> object:
        if embeddings:
            return embedding_vector(good_at[index], DIMS)
        return chat_reply_text(good_at[index])

    path = "/v1/embeddings" if embeddings else "/v1/chat/completions"
    assert_accounted_once(result, inputs, value_of=value_of, server=server, path=path)
    failed = {failure.index: failure for failure in result.failures}
    assert set(failed) == set(bad_at), result.summary(50)
    for index, failure in failed.items():
        bad = bad_at[index]
        assert failure.error_type == bad.error, (bad.name, failure)
        assert bad.message.search(failure.message), (bad.name, failure.message)
        assert failure.attempts == 0, "a bad item is never sent"
        assert len(failure.preview) <= 200, "a preview must stay short"
        assert len(failure.message) <= 2100
    # Bad items never reach the network; the good ones did.
    sent = [text for record in server.requests for text in (record.texts or ())]
    assert set(good_at.values()) <= set(sent)
    bad_texts = {b.value for b in bad_at.values() if isinstance(b.value, str)}
    assert not bad_texts & set(sent), "a bad item was sent"
    assert len(result.summary(100)) < 20_000, "the summary must stay readable"


@pytest.mark.mock_openai(record_texts=True)
def test_bad_items_in_a_sync_embedding_batch(
    mock_openai: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    texts, bad_at, good_at = _interleave([*BAD_ITEMS, TOO_LONG])
    with sync_client(mock_openai.base_url) as client:
        result = client.embed_batch(texts, batch_size=4, max_concurrency=2, dimensions=DIMS)
    check_bad_batch(result, bad_at, good_at, mock_openai, embeddings=True)
    figures(
        section="bad_items",
        runner="sync",
        operation="embed_batch",
        tried=[bad_at[f.index].name for f in result.failures],
        errors={
            bad_at[f.index].name: f"{f.error_type}: {f.message[:130]}" for f in result.failures
        },
        good_succeeded=len(good_at),
    )


@pytest.mark.anyio
@pytest.mark.mock_openai(record_texts=True)
async def test_bad_items_in_an_async_embedding_batch(
    mock_openai: MockOpenAIServer, figures: Callable[..., None], anyio_backend: str
) -> None:
    tasks_before = count_tasks()
    texts, bad_at, good_at = _interleave([*BAD_ITEMS, TOO_LONG])
    async with async_client(mock_openai.base_url) as client:
        result = await client.embed_batch(texts, batch_size=4, max_concurrency=2, dimensions=DIMS)
    assert await settle_tasks(tasks_before) <= tasks_before
    check_bad_batch(result, bad_at, good_at, mock_openai, embeddings=True)
    figures(
        section="bad_items",
        runner=anyio_backend,
        operation="embed_batch",
        tried=[bad_at[f.index].name for f in result.failures],
    )


# A 10 MB text is valid input for summaries (map-reduced in ~100 requests): not a bad item there.
@pytest.mark.mock_openai(record_texts=True)
def test_bad_items_in_a_sync_summary_batch(
    mock_openai: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    texts, bad_at, good_at = _interleave(BAD_ITEMS)
    with sync_client(mock_openai.base_url) as client:
        result = client.summarize_batch(texts, max_concurrency=2)
    check_bad_batch(result, bad_at, good_at, mock_openai, embeddings=False)
    assert mock_openai.stats.total_requests == len(good_at)
    figures(
        section="bad_items",
        runner="sync",
        operation="summarize_batch",
        tried=[bad_at[f.index].name for f in result.failures],
        errors={
            bad_at[f.index].name: f"{f.error_type}: {f.message[:130]}" for f in result.failures
        },
    )


@pytest.mark.anyio
@pytest.mark.mock_openai(record_texts=True)
async def test_bad_items_in_an_async_summary_batch(
    mock_openai: MockOpenAIServer, anyio_backend: str
) -> None:
    texts, bad_at, good_at = _interleave(BAD_ITEMS)
    async with async_client(mock_openai.base_url) as client:
        result = await client.summarize_batch(texts, max_concurrency=2)
    check_bad_batch(result, bad_at, good_at, mock_openai, embeddings=False)
    assert mock_openai.stats.total_requests == len(good_at)


SINGLE_ERRORS: dict[str, tuple[type[BaseException], str]] = {
    "None": (TypeError, "NoneType"),
    "int": (TypeError, "int"),
    "float": (TypeError, "float"),
    "bool": (TypeError, "bool"),
    "bytes": (TypeError, "bytes"),
    "empty string": (InvalidInput, "empty"),
    "whitespace": (InvalidInput, "whitespace|empty"),
    "lone high surrogate": (InvalidInput, "surrogate"),
    "lone low surrogate": (InvalidInput, "surrogate"),
}
SINGLE = [pytest.param(bad, id=bad.name) for bad in BAD_ITEMS]


def _check_single_error(bad: Bad, error: BaseException, server: MockOpenAIServer) -> None:
    expected, message = SINGLE_ERRORS[bad.name]
    assert isinstance(error, expected), repr(error)
    assert re.search(message, str(error), re.IGNORECASE), str(error)
    assert server.stats.total_requests == 0, "a bad input reached the network"


@pytest.mark.parametrize("bad", SINGLE)
def test_bad_single_calls_sync(bad: Bad, server: MockOpenAIServer) -> None:
    with sync_client(server.base_url) as client:
        for call in (
            lambda: client.embed(bad.value),  # type: ignore[call-overload]
            lambda: client.embed(["fine", bad.value]),  # type: ignore[list-item]
            lambda: client.complete(bad.value),  # type: ignore[arg-type]
            lambda: client.summarize(bad.value),  # type: ignore[arg-type]
        ):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - checked just below
                call()
            _check_single_error(bad, caught.value, server)
        # Nothing else lost: the client still works.
        assert_vector(
            client.embed("after the bad input", dimensions=DIMS), "after the bad input", 8
        )


@pytest.mark.anyio
@pytest.mark.parametrize("bad", SINGLE)
async def test_bad_single_calls_async(
    bad: Bad, server: MockOpenAIServer, anyio_backend: str
) -> None:
    async with async_client(server.base_url) as client:
        for call in (
            lambda: client.embed(bad.value),  # type: ignore[call-overload]
            lambda: client.embed(["fine", bad.value]),  # type: ignore[list-item]
            lambda: client.complete(bad.value),  # type: ignore[arg-type]
            lambda: client.summarize(bad.value),  # type: ignore[arg-type]
        ):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - checked just below
                await call()
            _check_single_error(bad, caught.value, server)
        vector = await client.embed("after the bad input", dimensions=DIMS)
        assert_vector(vector, "after the bad input", DIMS)


def test_ten_megabyte_single_calls(server: MockOpenAIServer, figures: Callable[..., None]) -> None:
    """One 10 MB text: embed gets the server's clear 400 (one request, not retried); a chat
    completion of it is valid, and is answered. Either way nothing hangs."""
    with sync_client(server.base_url) as client:
        started = time.monotonic()
        with pytest.raises((openai.BadRequestError, InvalidInput)) as caught:
            client.embed(TEN_MB)
        assert re.search("token|context length|too long", str(caught.value), re.IGNORECASE)
        assert server.stats.total_requests <= 1
        assert client.complete(TEN_MB)
        elapsed = time.monotonic() - started
    figures(
        section="bad_single",
        case="10 MB string, embed()",
        outcome=f"{type(caught.value).__name__}: {str(caught.value)[:100]}",
        elapsed=elapsed,
    )


# -- bad numeric options ---------------------------------------------------------------------


def _client(**options: Any) -> Callable[[str], Any]:
    return lambda url: ResilientClient(api_key=TEST_KEY, base_url=url, **options)


CONSTRUCTION = [
    ("deadline=nan", _client(deadline=NAN), ValueError, "deadline"),
    ("deadline=-1", _client(deadline=-1), ValueError, "deadline"),
    ("deadline=0", _client(deadline=0), ValueError, "deadline"),
    ("deadline=inf", _client(deadline=math.inf), ValueError, "deadline"),
    ("deadline='10'", _client(deadline="10"), TypeError, "deadline"),
    ("timeouts=nan", _client(timeouts=NAN), ValueError, "timeouts"),
    ("timeouts=-5", _client(timeouts=-5), ValueError, "timeouts"),
    ("timeouts=inf", _client(timeouts=math.inf), ValueError, "timeouts"),
    ("Timeouts(read=nan)", lambda url: Timeouts(read=NAN), ValueError, "read"),
    ("Timeouts(connect=-1)", lambda url: Timeouts(connect=-1), ValueError, "connect"),
    ("max_concurrency=0", _client(max_concurrency=0), ValueError, "max_concurrency"),
    ("max_concurrency=-3", _client(max_concurrency=-3), ValueError, "max_concurrency"),
    ("max_concurrency=nan", _client(max_concurrency=NAN), TypeError, "max_concurrency"),
    ("max_concurrency=2.5", _client(max_concurrency=2.5), TypeError, "max_concurrency"),
    ("max_attempts=0", lambda url: RetryPolicy(max_attempts=0), ValueError, "max_attempts"),
    ("max_attempts=-1", lambda url: RetryPolicy(max_attempts=-1), ValueError, "max_attempts"),
    ("max_attempts=nan", lambda url: RetryPolicy(max_attempts=NAN), TypeError, "max_attempts"),  # type: ignore[arg-type]
    ("base_delay=nan", lambda url: RetryPolicy(base_delay=NAN), ValueError, "base_delay"),
    ("base_delay=-1", lambda url: RetryPolicy(base_delay=-1), ValueError, "base_delay"),
    ("max_delay=inf", lambda url: RetryPolicy(max_delay=math.inf), ValueError, "max_delay"),
    ("base_delay=1e300", lambda url: RetryPolicy(base_delay=1e300), ValueError, "delay"),
    ("max_retry_after=nan", lambda url: RetryPolicy(max_retry_after=NAN), ValueError, "after"),
    ("retry='5'", _client(retry="5"), TypeError, "retry"),
]


@pytest.mark.parametrize(
    ("make", "error", "names"),
    [pytest.param(make, error, names, id=case) for case, make, error, names in CONSTRUCTION],
)
def test_bad_options_fail_at_construction(
    make: Callable[[str], Any], error: type[Exception], names: str, server: MockOpenAIServer
) -> None:
    with pytest.raises(error, match=names):
        make(server.base_url)
    assert server.stats.total_requests == 0


def _embed_batch(**options: Any) -> Callable[[Any], Any]:
    return lambda client: client.embed_batch(["a", "b"], **options)


def _map(**options: Any) -> Callable[[Any], Any]:
    return lambda client: client.map(str, [1], **options)


CALLS = [
    ("embed(deadline=nan)", lambda c: c.embed("x", deadline=NAN), ValueError, "deadline"),
    ("embed(deadline=-1)", lambda c: c.embed("x", deadline=-1), ValueError, "deadline"),
    ("embed(deadline=inf)", lambda c: c.embed("x", deadline=math.inf), ValueError, "deadline"),
    ("complete(deadline=0)", lambda c: c.complete("x", deadline=0), ValueError, "deadline"),
    ("embed_batch(batch_size=0)", _embed_batch(batch_size=0), ValueError, "batch_size"),
    ("embed_batch(batch_size=-1)", _embed_batch(batch_size=-1), ValueError, "batch_size"),
    ("embed_batch(batch_size=10**9)", _embed_batch(batch_size=10**9), ValueError, "batch_size"),
    ("embed_batch(batch_size=nan)", _embed_batch(batch_size=NAN), TypeError, "batch_size"),
    ("embed_batch(batch_size=2.5)", _embed_batch(batch_size=2.5), TypeError, "batch_size"),
    ("embed_batch(max_concurrency=0)", _embed_batch(max_concurrency=0), ValueError, "concurrency"),
    ("embed_batch(max_concurrency=nan)", _embed_batch(max_concurrency=NAN), TypeError, "concur"),
    ("embed_batch(deadline=nan)", _embed_batch(deadline=NAN), ValueError, "deadline"),
    ("embed_batch(deadline=-1)", _embed_batch(deadline=-1), ValueError, "deadline"),
    ("map(deadline_per_item=nan)", _map(deadline_per_item=NAN), ValueError, "deadline"),
    ("map(max_concurrency=-1)", _map(max_concurrency=-1), ValueError, "concurrency"),
]


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [pytest.param(call, error, names, id=case) for case, call, error, names in CALLS],
)
def test_bad_options_fail_at_the_call_sync(
    call: Callable[[Any], Any], error: type[Exception], names: str, server: MockOpenAIServer
) -> None:
    with sync_client(server.base_url) as client:
        with pytest.raises(error, match=names):
            call(client)
        assert server.stats.total_requests == 0
        assert client.embed("still works")


async def _settle(outcome: Any) -> Any:
    return await outcome if inspect.isawaitable(outcome) else outcome


def _async_cases() -> list[Any]:
    cases = []
    for case, call, error, names in CALLS:
        cases.append(pytest.param(call, error, names, id=case))
    return cases


@pytest.mark.anyio
@pytest.mark.parametrize(("call", "error", "names"), _async_cases())
async def test_bad_options_fail_at_the_call_async(
    call: Callable[[Any], Any],
    error: type[Exception],
    names: str,
    server: MockOpenAIServer,
    anyio_backend: str,
) -> None:
    async with async_client(server.base_url) as client:
        with pytest.raises(error, match=names):
            await _settle(call(client))
        assert server.stats.total_requests == 0
        assert await client.embed("still works")


def test_bad_summary_batch_deadline_fails_clearly(server: MockOpenAIServer) -> None:
    """A bad deadline for a summary batch is refused at the call, as for every other batch."""
    with sync_client(server.base_url) as client, pytest.raises(ValueError, match="deadline"):
        client.summarize_batch(["a", "b"], deadline=NAN)
    assert server.stats.total_requests == 0


def test_huge_but_valid_options_work(
    server: MockOpenAIServer, figures: Callable[..., None]
) -> None:
    """Huge values that validation accepts must work: no overflow, no 10**9 threads."""
    with pytest.raises(ValueError, match="deadline must be at most"):
        sync_client(server.base_url, deadline=1e300)
    with sync_client(
        server.base_url,
        deadline=1e7,
        max_concurrency=10**9,
        retry=RetryPolicy(max_attempts=10**9, base_delay=0.01, max_delay=0.05),
    ) as client:
        assert_vector(client.embed("huge", dimensions=DIMS), "huge", DIMS)
        result = client.embed_batch(
            [f"t{i}" for i in range(40)], batch_size=1, max_concurrency=10**9, dimensions=DIMS
        )
        assert result.ok
        assert client.complete("huge", deadline=1e7)
    assert server.stats.peak_in_flight <= 40
    figures(
        section="bad_single",
        case="deadline=1e7 (the maximum; 1e300 is refused), max_concurrency=10**9, "
        "max_attempts=10**9",
        outcome="accepted; calls and a 40-item batch work",
    )


def test_a_billion_attempts_are_still_bounded_by_the_deadline(figures: Callable[..., None]) -> None:
    with MockOpenAIServer(fail_rate=1.0, random_faults=[Fault.status(500)]) as server:
        policy = RetryPolicy(max_attempts=10**9, base_delay=0.01, max_delay=0.05)
        with sync_client(server.base_url, retry=policy, deadline=1.0) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                client.embed("always fails")
            elapsed = time.monotonic() - started
    assert elapsed <= 1.0 + 0.5
    figures(
        section="bad_single",
        case="max_attempts=10**9 against a server failing every time",
        outcome=f"DeadlineExceeded after {elapsed:.2f} s "
        f"({server.stats.total_requests} attempts, deadline 1 s)",
    )


def _huge_timeouts_client(make: Callable[..., Any], server: MockOpenAIServer) -> Any:
    try:
        return make(server.base_url, timeouts=1e12, deadline=None)
    except ValueError as exc:
        if "timeouts" not in str(exc):
            raise
        return None


def test_huge_timeouts_without_deadline_sync(server: MockOpenAIServer) -> None:
    client = _huge_timeouts_client(sync_client, server)
    if client is None:
        return

    def use() -> None:
        with client:
            client.embed("x")
            client.complete("x")

    error = _without_leftovers(use)
    assert error is None, error


def _without_leftovers(call: Callable[[], object]) -> str | None:
    """Run ``call``; return its error as text.

    The OverflowError of the bug above leaks the unconnected socket that
    ``socket.create_connection`` was setting up (it closes it on OSError only), once per
    attempt. Their ResourceWarnings are silenced here and the survivors closed, so that they do
    not fail whichever later test the garbage collector happens to run in.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            call()
        except Exception as exc:
            error: str | None = repr(exc)
        else:
            error = None
        gc.collect()
        for obj in gc.get_objects():
            if _never_bound(obj):
                obj.close()
    return error


def _never_bound(obj: object) -> bool:
    if not isinstance(obj, socket.socket) or obj.fileno() == -1:
        return False
    if obj.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return obj.getsockname()[1] == 0
    except OSError:
        return False


@pytest.mark.anyio
async def test_huge_timeouts_without_deadline_async(
    server: MockOpenAIServer, anyio_backend: str
) -> None:
    client = _huge_timeouts_client(async_client, server)
    if client is None:
        return
    async with client:
        assert await client.embed("x")
        assert await client.complete("x")


# -- bad endpoints ---------------------------------------------------------------------------


def test_unknown_model(server: MockOpenAIServer, figures: Callable[..., None]) -> None:
    with sync_client(server.base_url) as client:
        with pytest.raises(openai.NotFoundError, match="unknown-model"):
            client.embed("x", model="unknown-model")
        with pytest.raises(openai.NotFoundError, match="does-not-exist"):
            client.complete("x", model="does-not-exist")
        assert server.stats.total_requests == 2, "a 404 was retried"
        server.reset_stats()
        texts = [f"t{i}" for i in range(50)]
        result = client.embed_batch(texts, model="unknown-model", batch_size=5, max_concurrency=2)
        assert_accounted_once(result, texts, server=server)
        assert {f.error_type for f in result.failures} == {"NotFoundError"}
        assert len(result.failures) == 50
        # The error names no input: no bisection, and the batch stops sending.
        batch_requests = server.stats.total_requests
        assert batch_requests <= 3
        summaries = client.summarize_batch(texts[:10], model="does-not-exist", max_concurrency=2)
        assert_accounted_once(summaries, texts[:10], server=server, path="/v1/chat/completions")
        assert {f.error_type for f in summaries.failures} == {"NotFoundError"}
    figures(
        section="bad_endpoint",
        case="unknown model",
        outcome="NotFoundError at once (1 request); a 50-item batch stops after "
        f"{batch_requests} requests (server), all 50 recorded",
    )


@pytest.mark.anyio
async def test_unknown_model_async(server: MockOpenAIServer, anyio_backend: str) -> None:
    texts = [f"t{i}" for i in range(50)]
    async with async_client(server.base_url) as client:
        with pytest.raises(openai.NotFoundError):
            await client.embed("x", model="unknown-model")
        result = await client.embed_batch(
            texts, model="unknown-model", batch_size=5, max_concurrency=2
        )
    assert_accounted_once(result, texts, server=server)
    assert {f.error_type for f in result.failures} == {"NotFoundError"}
    assert server.stats.total_requests <= 4


def _dead_ends() -> list[Any]:
    return [
        pytest.param(
            "closed port",
            "refused|connection attempts failed|attempts to connect",
            id="closed-port",
        ),
        pytest.param("garbage bytes", "protocol|disconnect|reset|illegal|invalid", id="not-http"),
        pytest.param("ftp://", "unsupported protocol", id="ftp"),
    ]


class DeadEnd:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.garbage: GarbageServer | None = None

    def __enter__(self) -> str:
        if self.kind == "closed port":
            return f"http://127.0.0.1:{closed_port()}/v1"
        if self.kind == "ftp://":
            return "ftp://127.0.0.1:21/v1"
        self.garbage = GarbageServer().__enter__()
        return self.garbage.base_url

    def __exit__(self, *exc_info: object) -> None:
        if self.garbage is not None:
            self.garbage.__exit__()


def _check_dead_end(error: BaseException, explains: str, elapsed: float) -> None:
    assert isinstance(error, openai.APIConnectionError), repr(error)
    assert re.search(explains, error_chain_text(error), re.IGNORECASE), error_chain_text(error)
    assert elapsed < 5.0, "gave up too slowly"


def _check_dead_end_failures(
    result: BatchResult[Any], url: str, explains: str, max_attempts: int
) -> None:
    """One outcome per item (SPEC §6): once the batch has found the server dead, an item not
    sent yet, or whose retries that finding cut short, fails with `ServerUnreachable` naming
    the base URL and chained to the connection error; only an item whose own attempts all ran
    out before that fails with the SDK's connection error."""
    if any(failure.error_type == "ServerUnreachable" for failure in result.failures):
        assert result.stopped_by is not None
        assert result.stopped_by.error_type == "ServerUnreachable"
    for failure in result.failures:
        if failure.error_type == "ServerUnreachable":
            assert url in failure.message, failure.message
            if failure.attempts:
                assert re.search(explains, failure.traceback, re.IGNORECASE), failure.traceback
        else:
            assert failure.error_type == "APIConnectionError", failure
            assert failure.attempts == max_attempts, failure
            assert re.search(explains, failure.traceback, re.IGNORECASE), failure.traceback


@pytest.mark.parametrize(("kind", "explains"), _dead_ends())
def test_base_url_that_does_not_serve_http_sync(
    kind: str, explains: str, figures: Callable[..., None]
) -> None:
    with DeadEnd(kind) as url, sync_client(url, deadline=10) as client:
        started = time.monotonic()
        with pytest.raises(openai.APIConnectionError) as caught:
            client.embed("x")
        _check_dead_end(caught.value, explains, time.monotonic() - started)
        with pytest.raises(openai.APIConnectionError):
            client.complete("x")
        started = time.monotonic()
        texts = ["a", "b", "c", "d"]
        result = client.embed_batch(texts, batch_size=1, max_concurrency=2)
        elapsed = time.monotonic() - started
    assert_accounted_once(result, texts)
    assert len(result.failures) == 4
    _check_dead_end_failures(result, url, explains, client.retry.max_attempts)
    assert elapsed < 5.0
    cause = caught.value.__cause__
    figures(
        section="bad_endpoint",
        case=f"base URL: {kind}",
        outcome=f"APIConnectionError ({type(cause).__name__}: {str(cause)[:70]}) after "
        f"{client.retry.max_attempts} attempts; batch: 4/4 recorded",
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("kind", "explains"), _dead_ends())
async def test_base_url_that_does_not_serve_http_async(
    kind: str, explains: str, anyio_backend: str
) -> None:
    tasks_before = count_tasks()
    with DeadEnd(kind) as url:
        async with async_client(url, deadline=10) as client:
            started = time.monotonic()
            with pytest.raises(openai.APIConnectionError) as caught:
                await client.embed("x")
            _check_dead_end(caught.value, explains, time.monotonic() - started)
            texts = ["a", "b", "c"]
            result = await client.embed_batch(texts, batch_size=1, max_concurrency=2)
    assert_accounted_once(result, texts)
    assert len(result.failures) == 3
    _check_dead_end_failures(result, url, explains, client.retry.max_attempts)
    assert await settle_tasks(tasks_before) <= tasks_before


def test_server_answering_html_instead_of_json(
    figures: Callable[..., None],
) -> None:
    """Every answer is an HTML page (a captive portal): a 200 that fails its checks is
    `InvalidResponse`, retried like a 5xx (SPEC §6); every item fails with it, none lost."""
    attempts = FAST_RETRY.max_attempts
    texts = [f"t{i}" for i in range(10)]
    with MockOpenAIServer(fail_rate=1.0, random_faults=[Fault.html()]) as server:
        with sync_client(server.base_url) as client:
            with pytest.raises(InvalidResponse, match=r"(?i)json|html"):
                client.embed("x")
            assert server.stats.total_requests == attempts
            result = client.embed_batch(texts, batch_size=2)
        assert server.stats.total_requests == attempts + 5 * attempts
    assert_accounted_once(result, texts)
    assert len(result.failures) == 10
    assert {f.error_type for f in result.failures} == {"InvalidResponse"}
    assert all(re.search("(?i)json|html", f.message) for f in result.failures)
    figures(
        section="bad_endpoint",
        case="server answers HTML (200) to embeddings",
        outcome=f"{result.failures[0].error_type}: {result.failures[0].message[:80]}; "
        f"10/10 recorded after {attempts} attempts each",
    )
