"""Bounded batches with failure accounting over real sockets (SPEC §6), sync and async."""

from __future__ import annotations

import _thread
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest

from resilient_llm import (
    AsyncResilientClient,
    BatchFailed,
    InvalidInput,
    ItemFailure,
    ResilientClient,
    RetryPolicy,
)
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from .conftest import TEST_KEY

PATIENT = RetryPolicy(max_attempts=12, base_delay=0.01, max_delay=0.05)


def sync_client(server: MockOpenAIServer, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", PATIENT)
    return ResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def async_client(server: MockOpenAIServer, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", PATIENT)
    return AsyncResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


TEXTS = [f"document number {i}" for i in range(1000)]


def expected(text: str, dims: int = 8) -> list[float]:
    return embedding_vector(text, dims)


def same_vectors(got: list[Any], texts: list[str], dims: int = 8) -> bool:
    return len(got) == len(texts) and all(
        vector is not None
        and all(abs(a - b) < 1e-6 for a, b in zip(vector, expected(text, dims), strict=True))
        for vector, text in zip(got, texts, strict=True)
    )


def assert_accounted_once(result: Any, total: int) -> None:
    succeeded = {index for index, _ in result.succeeded()}
    failed = [failure.index for failure in result.failures]
    assert len(failed) == len(set(failed))
    assert succeeded.isdisjoint(failed)
    assert succeeded | set(failed) == set(range(total))
    assert result.stats.succeeded + result.stats.failed == result.stats.total == total


# -- bounded, ordered ------------------------------------------------------------------------


def test_sync_batch_is_ordered_chunked_and_bounded() -> None:
    with MockOpenAIServer(latency=0.02) as server, sync_client(server) as client:
        result = client.embed_batch(TEXTS, batch_size=50, max_concurrency=4, dimensions=8)
        assert result.ok
        assert same_vectors(result.values, TEXTS)
        assert server.stats.requests_by_path["/v1/embeddings"] == 20
        assert result.stats.requests == 20
        assert server.stats.peak_in_flight <= 4
        assert result.stats.prompt_tokens > 0


@pytest.mark.anyio
async def test_async_batch_is_ordered_chunked_and_bounded() -> None:
    with MockOpenAIServer(latency=0.02) as server:
        async with async_client(server) as client:
            result = await client.embed_batch(TEXTS, batch_size=50, max_concurrency=4, dimensions=8)
        assert result.ok
        assert same_vectors(result.values, TEXTS)
        assert server.stats.requests_by_path["/v1/embeddings"] == 20
        assert server.stats.peak_in_flight <= 4


def test_sync_batch_under_random_faults_loses_nothing() -> None:
    with (
        MockOpenAIServer(fail_rate=0.3, seed=7) as server,
        sync_client(server) as client,
    ):
        result = client.embed_batch(TEXTS, batch_size=50, max_concurrency=4, dimensions=8)
    assert_accounted_once(result, 1000)
    assert result.ok, result.summary()
    assert result.stats.retries > 0
    assert result.stats.retries == sum(server.stats.faults_injected.values())
    assert same_vectors(result.values, TEXTS)


@pytest.mark.anyio
async def test_async_batch_under_random_faults_loses_nothing() -> None:
    with MockOpenAIServer(fail_rate=0.3, seed=11) as server:
        async with async_client(server) as client:
            result = await client.embed_batch(TEXTS, batch_size=50, max_concurrency=4, dimensions=8)
    assert_accounted_once(result, 1000)
    assert result.ok, result.summary()
    assert result.stats.retries == sum(server.stats.faults_injected.values()) > 0


# -- poison isolation and bad input ------------------------------------------------------------


def poisoned(n: int = 200, at: int = 137) -> list[object]:
    texts: list[object] = [f"clean text {i}" for i in range(n)]
    texts[at] = "this one carries POISON inside"
    return texts


def check_poison_result(result: Any, at: int = 137) -> None:
    assert [f.index for f in result.failures] == [at]
    failure = result.failures[0]
    assert failure.status == 400
    assert failure.error_type == "BadRequestError"
    assert "POISON" in failure.preview
    assert result.stats.succeeded == 199
    assert result.stats.bisections >= 1
    assert result.values[at] is None
    assert result.values[at + 1] is not None


def test_sync_poisoned_input_fails_alone() -> None:
    with MockOpenAIServer() as server, sync_client(server) as client:
        result = client.embed_batch(poisoned(), batch_size=100, dimensions=4)
        check_poison_result(result)
        # One poisoned request of 100 costs at most 1 + 2*ceil(log2 100) = 15 requests.
        assert server.stats.total_requests <= 1 + 15
        with pytest.raises(BatchFailed) as caught:
            result.raise_for_failures()
        assert caught.value.result is result


@pytest.mark.anyio
async def test_async_poisoned_input_fails_alone() -> None:
    with MockOpenAIServer() as server:
        async with async_client(server) as client:
            result = await client.embed_batch(poisoned(), batch_size=100, dimensions=4)
    check_poison_result(result)


def test_error_that_names_no_input_stops_the_batch_without_bisecting_everything() -> None:
    bad_parameter = Fault.status(
        400, message="Unrecognized request argument supplied: frobnicate", error_code=None
    )
    with MockOpenAIServer() as server, sync_client(server) as client:
        server.script(*[bad_parameter] * 50, path="/v1/embeddings")
        result = client.embed_batch(TEXTS[:400], batch_size=50, max_concurrency=1)
        assert result.stats.failed == 400
        assert {f.error_type for f in result.failures} == {"BadRequestError"}
        # The first request and one probe with an input that cannot be the bad one, then the
        # batch stops sending: the 350 inputs of the other requests were never sent.
        assert server.stats.total_requests == 2
        assert result.stats.not_sent == 350
        assert result.stopped_by is not None
        assert result.stopped_by.error_type == "BadRequestError"


def test_bad_inputs_fail_individually_and_are_never_sent() -> None:
    texts: list[object] = [
        "fine 0",
        None,
        "",
        "   ",
        42,
        b"bytes",
        "bad \ud800 surrogate",
        "fine 7",
    ]
    with MockOpenAIServer(record_texts=True) as server, sync_client(server) as client:
        result = client.embed_batch(texts, dimensions=4)
        sent = [text for record in server.requests for text in (record.texts or ())]
    assert sent == ["fine 0", "fine 7"]
    assert [f.index for f in result.failures] == [1, 2, 3, 4, 5, 6]
    assert {f.error_type for f in result.failures} == {"InvalidInput"}
    assert "decode" in result.failures[4].message
    assert result.values[0] is not None
    assert result.values[7] is not None


def test_too_long_inputs_fail_or_are_truncated() -> None:
    huge = "Hello, world! " * 5_000
    with MockOpenAIServer() as server, sync_client(server) as client:
        failed = client.embed_batch(["short", huge], dimensions=4)
        assert [f.index for f in failed.failures] == [1]
        assert "too_long" in failed.failures[0].message
        truncated = client.embed_batch(["short", huge], dimensions=4, too_long="truncate")
        assert truncated.ok
        assert server.stats.responses_by_status.get(400, 0) == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 4096}, ValueError, "batch_size"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"too_long": "cut"}, ValueError, "too_long"),
        ({"requests_per_minute": -5}, ValueError, "requests_per_minute"),
        ({"encoding_format": "int8"}, ValueError, "encoding_format"),
    ],
)
def test_bad_batch_options_fail_before_anything_is_sent(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with MockOpenAIServer() as server, sync_client(server) as client:
        with pytest.raises(error, match=names):
            client.embed_batch(TEXTS[:10], **kwargs)
        with pytest.raises(TypeError, match="iterable"):
            client.embed_batch("one string")
        assert server.stats.total_requests == 0


# -- streaming and memory ------------------------------------------------------------------------


class CountingSource:
    """A generator of texts that records how many were read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            self.read += 1
            yield f"streamed text {i}"


def test_streaming_form_holds_a_bounded_window_of_a_large_generator() -> None:
    source = CountingSource(50_000)
    received = 0
    most_held = 0
    batch_size, concurrency = 500, 4
    with MockOpenAIServer() as server, sync_client(server) as client:
        with client.iter_embed_batch(
            source, batch_size=batch_size, max_concurrency=concurrency, dimensions=2
        ) as stream:
            for _index, outcome in stream:
                assert not isinstance(outcome, ItemFailure)
                received += 1
                most_held = max(most_held, source.read - received)
        result = stream.result()
    assert received == 50_000 == result.stats.succeeded
    assert result.values == []  # the streaming form keeps no values
    # Units in flight (twice the slots, so units in back-off do not starve the pipe), plus the
    # one being planned, plus the one being consumed, plus a few inputs read ahead.
    assert most_held <= (2 * concurrency + 2) * batch_size + 16


@pytest.mark.anyio
async def test_async_streaming_form_yields_as_requests_finish() -> None:
    source = CountingSource(5_000)
    seen: set[int] = set()
    most_held = 0
    with MockOpenAIServer(latency=0.005) as server:
        async with async_client(server) as client:
            async with client.iter_embed_batch(
                source, batch_size=100, max_concurrency=4, dimensions=2
            ) as stream:
                async for index, outcome in stream:
                    assert isinstance(outcome, list)
                    seen.add(index)
                    most_held = max(most_held, source.read - len(seen))
            assert stream.result().stats.succeeded == 5_000
    assert seen == set(range(5_000))
    # Units in flight (twice the slots, so units in back-off do not starve the pipe), plus the
    # one being planned, plus the one being consumed, plus one chunk of inputs read ahead.
    assert most_held <= (2 * 4 + 2) * 100 + 64


# -- rate limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("client_rpm", [None, 1200])
def test_server_rate_limits_are_absorbed(client_rpm: float | None) -> None:
    # 20 requests per second on the server; 120 requests from 8 workers.
    with MockOpenAIServer(rpm=20, rate_window=1.0) as server, sync_client(server) as client:
        result = client.embed_batch(
            TEXTS[:600],
            batch_size=5,
            max_concurrency=8,
            requests_per_minute=client_rpm,
            dimensions=2,
        )
    assert result.ok, result.summary()
    # Every HTTP request counts, retries included: exactly what the server saw.
    assert result.stats.requests == server.stats.total_requests
    assert result.stats.requests == 120 + result.stats.rate_limited
    assert result.stats.rate_limited == server.stats.responses_by_status.get(429, 0)
    # Adaptive concurrency and Retry-After keep the 429s to a fraction of the requests.
    assert result.stats.rate_limited < 120


@pytest.mark.anyio
async def test_async_server_rate_limits_are_absorbed() -> None:
    with MockOpenAIServer(rpm=20, rate_window=1.0) as server:
        async with async_client(server) as client:
            result = await client.embed_batch(TEXTS[:300], batch_size=5, max_concurrency=8)
    assert result.ok, result.summary()
    assert result.stats.rate_limited == server.stats.responses_by_status.get(429, 0)


# -- summarize_batch and map ----------------------------------------------------------------------


def test_summarize_batch_accounts_for_every_text_and_map_reduces_long_ones() -> None:
    long_text = "\n\n".join(f"Paragraph {i}. " + "Some words here. " * 30 for i in range(12))
    texts: list[object] = ["A short text about cats.", long_text, None, "POISON text", "Dogs."]
    with MockOpenAIServer() as server, sync_client(server) as client:
        result = client.summarize_batch(texts, max_words=20, max_input_tokens=400)
        assert [f.index for f in result.failures] == [2, 3]
        assert result.failures[0].error_type == "InvalidInput"
        assert result.failures[1].status == 400
        assert all(isinstance(result.values[i], str) for i in (0, 1, 4))
        # The long text went through several chunk summaries and one combining call.
        assert server.stats.requests_by_path["/v1/chat/completions"] > 4


@pytest.mark.anyio
async def test_async_summarize_batch() -> None:
    with MockOpenAIServer() as server:
        async with async_client(server) as client:
            result = await client.summarize_batch(
                [f"text {i}" for i in range(30)], instructions="One line.", max_concurrency=5
            )
        assert result.ok
        assert server.stats.peak_in_flight <= 5


def test_sync_map_keeps_order_and_records_exceptions() -> None:
    def classify(n: int) -> str:
        if n % 7 == 3:
            raise ValueError(f"cannot classify {n}")
        return f"class-{n % 3}"

    result = ResilientClient(api_key=TEST_KEY).map(classify, range(50), max_concurrency=6)
    assert_accounted_once(result, 50)
    assert [f.index for f in result.failures] == [n for n in range(50) if n % 7 == 3]
    assert result.failures[0].error_type == "ValueError"
    assert "cannot classify 3" in result.failures[0].traceback
    assert result.values[1] == "class-1"


@pytest.mark.anyio
async def test_async_map_runs_a_real_pipeline_without_stalling_the_loop() -> None:
    stalls: list[float] = []
    done = anyio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            before = anyio.current_time()
            await anyio.sleep(0.01)
            stalls.append(anyio.current_time() - before - 0.01)

    # The heap of a whole test session makes full garbage collections slow; what is measured
    # here is the library's own blocking, so park that heap out of the collector's way.
    gc.collect()
    gc.freeze()
    try:
        with MockOpenAIServer(latency=(0.01, 0.05), seed=3) as server:
            async with async_client(server) as client:

                async def extract(doc: str) -> str:
                    return await client.complete(f"Extract the themes of: {doc}")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(heartbeat)
                    result = await client.map(
                        extract, [f"doc {i}" for i in range(200)], max_concurrency=20
                    )
                    done.set()
            assert result.ok
            assert server.stats.peak_in_flight <= 20
    finally:
        gc.unfreeze()
    # A library that blocks the loop per item stalls most beats; a CPU shared with other test
    # runs delays a rare one. So: nearly every beat on time, and no beat held for long.
    stalls.sort()
    assert len(stalls) >= 10, stalls
    assert stalls[int(len(stalls) * 0.95)] < 0.03, stalls[-10:]
    assert stalls[-1] < 0.5, stalls[-10:]


@pytest.mark.anyio
async def test_async_map_per_item_deadline() -> None:
    async def slow(n: int) -> int:
        await anyio.sleep(0.5 if n == 2 else 0)
        return n

    client = AsyncResilientClient(api_key=TEST_KEY)
    result = await client.map(slow, range(4), deadline_per_item=0.2)
    assert [f.index for f in result.failures] == [2]
    assert result.failures[0].error_type == "DeadlineExceeded"
    assert result.values == [0, 1, None, 3]


def test_map_per_item_deadline_reaches_calls_made_inside() -> None:
    with MockOpenAIServer() as server, sync_client(server, deadline=60) as client:
        server.script(*[Fault.hang()] * 3)
        started = time.monotonic()
        result = client.map(lambda text: client.embed(text), ["a", "b", "c"], deadline_per_item=1)
        assert time.monotonic() - started < 1.5
    assert {f.error_type for f in result.failures} == {"DeadlineExceeded"}


# -- progress ------------------------------------------------------------------------------------


def test_progress_bar_and_callback() -> None:
    seen: list[tuple[int, int]] = []
    with MockOpenAIServer() as server, sync_client(server) as client:
        result = client.embed_batch(
            TEXTS[:300], batch_size=25, progress=True, on_progress=lambda d, t: seen.append((d, t))
        )
    assert result.ok
    assert seen[-1] == (300, 300)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


# -- cancellation ----------------------------------------------------------------------------------


def test_sync_batch_interrupted_by_ctrl_c_returns_within_a_second() -> None:
    with MockOpenAIServer(latency=0.3) as server, sync_client(server) as client:
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.embed_batch(TEXTS, batch_size=10, max_concurrency=4)
        interrupted_after = time.monotonic() - started
        sent = server.stats.total_requests
        time.sleep(0.6)
        assert server.stats.total_requests <= sent + 4  # nothing new is submitted
    assert interrupted_after < 0.5 + 1.0
    gc.collect()


@pytest.mark.anyio
async def test_async_batch_cancelled_from_outside_stops_at_once() -> None:
    with MockOpenAIServer(latency=0.3) as server:
        async with async_client(server) as client:
            with anyio.move_on_after(0.5):
                await client.embed_batch(TEXTS, batch_size=10, max_concurrency=4)
            sent = server.stats.total_requests
            await anyio.sleep(1.0)
            # Requests already on the wire at the cancel may still arrive (at most one per
            # slot); a batch still sending would add a dozen in this second.
            assert server.stats.total_requests <= sent + 4


def test_batch_failed_names_the_first_failure() -> None:
    with MockOpenAIServer() as server, sync_client(server) as client:
        result = client.embed_batch(["ok", ""])
    with pytest.raises(BatchFailed, match="1 of 2 items failed; first: item 1"):
        result.raise_for_failures()
    assert isinstance(InvalidInput("x"), ValueError)


def test_fatal_errors_stop_sending() -> None:
    with MockOpenAIServer() as server, sync_client(server) as client:
        server.script(Fault.status(401), path="/v1/embeddings")
        result = client.embed_batch(TEXTS[:100], batch_size=10, max_concurrency=1)
        assert result.stats.failed == 100
        assert server.stats.total_requests == 1
        assert {f.error_type for f in result.failures} == {"AuthenticationError"}
        assert isinstance(openai.AuthenticationError, type)


def test_sync_batches_from_plain_threads_share_one_client() -> None:
    results: dict[int, Any] = {}
    with MockOpenAIServer(latency=0.01) as server, sync_client(server) as client:

        def job(worker: int) -> None:
            texts = [f"worker {worker} text {i}" for i in range(200)]
            results[worker] = client.embed_batch(texts, batch_size=20, max_concurrency=2)

        threads = [threading.Thread(target=job, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The batch threads and their connections are kept between batches.
        opened = server.stats.connections_opened
        client.embed_batch(TEXTS[:100], batch_size=20, max_concurrency=2)
        assert server.stats.connections_opened == opened
    assert sorted(results) == [0, 1, 2, 3]
    assert all(result.ok and result.stats.total == 200 for result in results.values())


# -- servers that refuse a request for its size (SPEC §6) --------------------------------------


SIZE_STYLES = [
    pytest.param({"max_inputs_per_request": 32, "size_limit_style": "tei"}, 32, id="tei-inputs"),
    pytest.param({"max_inputs_per_request": 16, "size_limit_style": "azure"}, 16, id="azure"),
    pytest.param({"max_inputs_per_request": 20, "size_limit_style": "openai"}, None, id="openai"),
    pytest.param({"max_request_bytes": 4_000, "size_limit_style": "tei"}, None, id="tei-bytes"),
    pytest.param({"max_request_bytes": 4_000, "size_limit_style": "litellm"}, None, id="litellm"),
]


@pytest.mark.parametrize(("limits", "named"), SIZE_STYLES)
def test_a_job_adapts_to_the_size_the_server_accepts(
    limits: dict[str, Any], named: int | None
) -> None:
    texts = [f"sized text {i:04d} " + "x" * 40 for i in range(600)]
    with MockOpenAIServer(record_texts=True, **limits) as server, sync_client(server) as client:
        result = client.embed_batch(texts, batch_size=200, dimensions=4)
        refused = server.stats.size_refusals
        sizes = [len(record.texts or ()) for record in server.requests]
    assert result.ok, result.summary()
    assert all(
        vector == embedding_vector(text, 4)
        for text, vector in zip(texts, result.values, strict=True)
    )
    limit = result.stats.size_limit
    assert limit is not None
    concurrency = 8  # the requests already in flight when the first refusal comes back
    if named is not None:
        assert limit == named  # the server named its limit: kept from the first refusal
        assert refused <= 600 // 200
    # Halving from 200 reaches a size that fits within log2(200) refusals per request in flight,
    # and the smaller size is kept for the rest of the job.
    assert refused <= concurrency * (200).bit_length()
    assert result.stats.requests == server.stats.total_requests
    assert max(sizes[-3:]) <= limit


@pytest.mark.anyio
async def test_an_async_job_adapts_to_the_size_the_server_accepts() -> None:
    texts = [f"async sized {i}" for i in range(300)]
    with MockOpenAIServer(max_inputs_per_request=32, size_limit_style="tei") as server:
        async with async_client(server) as client:
            result = await client.embed_batch(texts, batch_size=100, dimensions=4)
    assert result.ok, result.summary()
    assert result.stats.size_limit == 32
    # The three requests of 100 went out together; every later one fitted.
    assert server.stats.size_refusals <= 3


# -- a client's own rate limiter (SPEC §10, third point) ------------------------------------------


@pytest.mark.anyio
async def test_a_clients_limiter_paces_single_calls_and_batches_alike(tmp_path: Any) -> None:
    from resilient_llm import FileRateLimiter

    # 30 requests per 3 s window: at most 10 per second on the wire, on asyncio and trio.
    limiter = FileRateLimiter(tmp_path / "budget", requests_per_minute=600, window=3.0)
    with MockOpenAIServer() as server:
        async with async_client(server, rate_limiter=limiter) as client:
            started = time.monotonic()
            for i in range(5):
                await client.embed(f"single {i}", dimensions=2)
            result = await client.embed_batch(
                [f"batch {i}" for i in range(25)], batch_size=1, dimensions=2
            )
            elapsed = time.monotonic() - started
        busiest = server.max_requests_in_window(1.0)
    assert result.ok, result.summary()
    assert server.stats.total_requests == 30
    assert busiest <= 11  # paced, not bursting (one request of slack)
    assert elapsed >= 2.0  # 30 requests at about 10 per second
