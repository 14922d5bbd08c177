"""Issue 12, row 1 (SPEC §6): a rejected request is split down to every bad input, however many
share it; an error no input causes ends the batch fast.

Today: two poisoned texts in one request of 8 make both halves fail alike, the batch is judged
"request-level" and stops: 0 of 1,000 succeed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import BatchResult
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from ._public import (
    DIMS,
    answered_texts,
    assert_outcomes,
    async_client,
    run_cli,
    stat,
    stopped_by,
    sync_client,
    vector_of,
)

TOTAL = 1_000
BATCH_SIZE = 8
POISONED = (1, 6)  # both in the first request of 8: its two halves fail alike


def texts_with_poison(total: int = TOTAL, poisoned: tuple[int, ...] = POISONED) -> list[str]:
    return [
        f"document {i} with the POISON marker" if i in poisoned else f"document {i}"
        for i in range(total)
    ]


def extra_request_bound(k: int, batch_size: int) -> int:
    """Requests a bisection may add to isolate `k` bad inputs in one request of `batch_size`.

    Each level of the split tree holds at most `k` failing nodes, and each failing node sends
    its two halves: at most 2k requests per level over log2(batch_size) levels; plus one probe
    that tells an input error from a request-level one (SPEC §6).
    """
    return 2 * k * math.ceil(math.log2(batch_size)) + 1


def check_poison_run(result: BatchResult[Any], texts: list[str], server: MockOpenAIServer) -> None:
    # What the caller got: exactly the poisoned items failed, as the server's 400.
    _, failed = assert_outcomes(result, texts, failed=POISONED, value_of=vector_of(texts))
    for failure in result.failures:
        assert failure.error_type == "BadRequestError", failure
        assert failure.status == 400, failure
    # What the server saw: every good text was answered by the server itself; the requests it
    # got beyond the plain 125 stay within the bisection bound.
    good = {t for i, t in enumerate(texts) if i not in failed}
    assert good <= answered_texts(server), "a 'successful' text was never answered by the server"
    plain = math.ceil(len(texts) / BATCH_SIZE)
    extra = server.stats.total_requests - plain
    bound = extra_request_bound(len(POISONED), BATCH_SIZE)
    assert 0 < extra <= bound, f"{extra} extra requests to isolate 2 bad inputs (bound {bound})"
    assert result.stats.requests == server.stats.total_requests


def test_two_poisoned_inputs_in_one_request_fail_alone_sync(recording: MockOpenAIServer) -> None:
    texts = texts_with_poison()
    with sync_client(recording.base_url) as client:
        result = client.embed_batch(
            texts, batch_size=BATCH_SIZE, max_concurrency=4, dimensions=DIMS
        )
    check_poison_run(result, texts, recording)


@pytest.mark.anyio
async def test_two_poisoned_inputs_in_one_request_fail_alone_async(
    recording: MockOpenAIServer, anyio_backend: str
) -> None:
    texts = texts_with_poison()
    async with async_client(recording.base_url) as client:
        result = await client.embed_batch(
            texts, batch_size=BATCH_SIZE, max_concurrency=4, dimensions=DIMS
        )
    check_poison_run(result, texts, recording)


@pytest.mark.parametrize("bad", [(0, 1), (0, 7), (2, 3, 4), tuple(range(8))])
def test_any_number_of_bad_inputs_in_one_request(
    recording: MockOpenAIServer, bad: tuple[int, ...]
) -> None:
    """Adjacent, far apart, three, or every input of the request bad: each fails alone."""
    texts = texts_with_poison(64, bad)
    with sync_client(recording.base_url) as client:
        result = client.embed_batch(texts, batch_size=8, max_concurrency=2, dimensions=DIMS)
    assert_outcomes(result, texts, failed=bad, value_of=vector_of(texts))
    assert {f.error_type for f in result.failures} == {"BadRequestError"}
    extra = recording.stats.total_requests - 8
    assert extra <= extra_request_bound(len(bad), 8), f"{extra} extra requests"


def test_cli_embeds_every_good_line_around_poisoned_ones(
    recording: MockOpenAIServer, tmp_path: Path
) -> None:
    """The issue's CLI run at a tenth of its size: 300 lines, 31 poisoned (every ~10th)."""
    bad = {*range(3, 300, 10), 299}
    lines = [
        {"id": f"d{i}", "text": f"line {i} {'POISON' if i in bad else 'fine'}"} for i in range(300)
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    done = run_cli(
        "embed", str(source), "-o", str(out), "--base-url", recording.base_url,
        "--batch-size", "16", "--dimensions", str(DIMS), "--no-progress", timeout=120,
    )  # fmt: skip
    written = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    failures_file = tmp_path / "out.failures.jsonl"
    failed = (
        [json.loads(line) for line in failures_file.read_text().splitlines()]
        if failures_file.exists()
        else []
    )
    assert done.returncode == 3, done.stderr[-2000:]  # some inputs failed
    assert {record["id"] for record in failed} == {f"d{i}" for i in bad}, done.stderr[-2000:]
    assert len(written) == 300 - len(bad)
    for record in written:
        i = int(str(record["id"])[1:])
        assert record["embedding"] == pytest.approx(embedding_vector(lines[i]["text"], DIMS))


# -- errors that no single input causes: end the batch fast --------------------------------------

CONCURRENCY = 4
REQUEST_LEVEL_TOTAL = 400


def request_level_bound(batch_size: int, concurrency: int, *, bisects: bool) -> int:
    """What a batch may send before it stops on an error that no input causes.

    The requests in flight when the first error comes back (``concurrency``) and as many sent
    into slots freed before the verdict; for a 400 that could be about an input, one bisection
    path (two halves a level) and one probe (SPEC §6: "at most O(log batch_size) extra").
    A 401, a 404 model or no quota needs no bisection (SPEC §6: "ends the batch the same way").
    """
    bound = 2 * concurrency
    if bisects:
        bound += 2 * math.ceil(math.log2(batch_size)) + 1
    return bound


def check_fails_fast(
    result: BatchResult[Any],
    texts: list[str],
    server_requests: int,
    error_type: str,
    status: int,
    elapsed: float,
) -> None:
    _, failed = assert_outcomes(result, texts)
    assert failed == set(range(len(texts))), f"{len(texts) - len(failed)} items did not fail"
    assert {f.error_type for f in result.failures} == {error_type}
    bound = request_level_bound(BATCH_SIZE, CONCURRENCY, bisects=status in (400, 422))
    assert server_requests <= bound, f"the server got {server_requests} requests (bound {bound})"
    never_sent = [f for f in result.failures if f.attempts == 0]
    assert never_sent, "no item was left unsent: the batch did not stop"
    assert stat(result, "not_sent") == len(never_sent) > 0
    stop = stopped_by(result)
    assert stop is not None, "the batch ran to the end"
    assert stop.error_type == error_type
    assert stop.status == status
    assert elapsed < 10.0


REQUEST_LEVEL = [
    pytest.param({"model": "unknown-embedder"}, None, "NotFoundError", 404, id="unknown-model"),
    pytest.param(
        {"dimensions": 99_999}, None, "BadRequestError", 400, id="bad-parameter-dimensions"
    ),
    pytest.param({}, "someone-else-key", "AuthenticationError", 401, id="bad-key"),
    pytest.param({}, "quota", "RateLimitError", 429, id="insufficient-quota"),
]


def _server_for(server_option: str | None) -> MockOpenAIServer:
    if server_option == "quota":
        return MockOpenAIServer(fail_rate=1.0, random_faults=[Fault.insufficient_quota()])
    return MockOpenAIServer(api_key=server_option)


@pytest.mark.parametrize(("params", "server_option", "error_type", "status"), REQUEST_LEVEL)
def test_request_level_error_ends_the_batch_fast_sync(
    params: dict[str, Any], server_option: str | None, error_type: str, status: int
) -> None:
    texts = [f"document {i}" for i in range(REQUEST_LEVEL_TOTAL)]
    options = {"dimensions": DIMS, **params}
    with _server_for(server_option) as server, sync_client(server.base_url) as client:
        started = time.monotonic()
        result = client.embed_batch(
            texts, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, **options
        )
        elapsed = time.monotonic() - started
        requests = server.stats.total_requests
    check_fails_fast(result, texts, requests, error_type, status, elapsed)


@pytest.mark.anyio
@pytest.mark.parametrize(("params", "server_option", "error_type", "status"), REQUEST_LEVEL)
async def test_request_level_error_ends_the_batch_fast_async(
    params: dict[str, Any],
    server_option: str | None,
    error_type: str,
    status: int,
    anyio_backend: str,
) -> None:
    texts = [f"document {i}" for i in range(REQUEST_LEVEL_TOTAL)]
    options = {"dimensions": DIMS, **params}
    with _server_for(server_option) as server:
        async with async_client(server.base_url) as client:
            started = time.monotonic()
            result = await client.embed_batch(
                texts, batch_size=BATCH_SIZE, max_concurrency=CONCURRENCY, **options
            )
            elapsed = time.monotonic() - started
        requests = server.stats.total_requests
    check_fails_fast(result, texts, requests, error_type, status, elapsed)
