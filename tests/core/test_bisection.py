"""Rejected requests: the pure judgments, and the production embeddings job and program driven
against a scripted server (the code that runs, not a copy of it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm._answers import EmbeddingsPayload
from resilient_llm._batch.bisection import (
    PROBE_TEXT,
    SizeRefusal,
    bisection_request_bound,
    is_input_rejection,
    size_refusal,
    smaller_size,
)
from resilient_llm._batch.jobs import EmbedJob
from resilient_llm._batch.programs import Rejected, Reply
from resilient_llm._batch.results import BatchResult
from resilient_llm._batch.threads import drive
from resilient_llm._config import BatchOptions
from resilient_llm._endpoints import EmbeddingsCall
from tests.sdk_objects import status_error, timeout_error

TEI_BATCH = "batch size 200 > maximum allowed batch size 32"


def error(status: int, message: str, **fields: Any) -> openai.APIStatusError:
    return status_error(status, body={"error": {"message": message, **fields}})


# --- the judgments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # text-embeddings-inference: the body's "error" is a string, status 413 or 422.
        (status_error(413, body={"error": TEI_BATCH, "error_type": "Validation"}), 32),
        (status_error(422, body={"error": TEI_BATCH, "error_type": "Validation"}), 32),
        (error(400, "max_client_batch_size is 16; got 64 inputs"), 16),
        (error(400, "Too many inputs: at most 100 inputs per request"), 100),
        (error(400, "Requested 350000 tokens, max 300000 tokens per request"), None),
        (error(413, "Request Entity Too Large"), None),
        # The wordings the testing kit's size styles copy from the real servers.
        (status_error(413, body={"message": TEI_BATCH, "code": 413, "type": "Validation"}), 32),
        (error(400, "Too many inputs. The max number of inputs is 16.  We hope to increase"), 16),
        (
            error(
                400,
                "Request size is too large. Request size is 7 MB. Max size is 5 MB",
                param="content-length",
            ),
            None,
        ),
        (status_error(413, body={}), None),
    ],
)
def test_size_refusal_reads_the_limit_when_the_server_names_one(
    exc: openai.APIStatusError, expected: int | None
) -> None:
    assert size_refusal(exc) == SizeRefusal(expected)
    assert not is_input_rejection(exc)


@pytest.mark.parametrize(
    "exc",
    [
        error(400, "Invalid input: the text contains POISON"),
        error(422, "Input validation error: `inputs` must have less than 512 tokens. Given: 900"),
        # vLLM's per-input limit: one input is too long, not the request.
        error(
            400,
            "This model's maximum context length is 8192 tokens. However, you requested "
            "9000 tokens in the input.",
        ),
        error(400, "Unrecognized request argument supplied: frobnicate"),
    ],
)
def test_input_rejections_are_not_size_refusals(exc: openai.APIStatusError) -> None:
    assert size_refusal(exc) is None
    assert is_input_rejection(exc)


@pytest.mark.parametrize(
    "exc",
    [error(500, "boom"), error(429, "slow down"), error(401, "bad key"), timeout_error(), None],
)
def test_other_errors_are_neither(exc: object) -> None:
    assert size_refusal(exc) is None
    assert not is_input_rejection(exc)


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [(200, 32, 32), (200, None, 100), (3, None, 1), (1, None, 1), (10, 64, 5), (64, 64, 32)],
)
def test_smaller_size(size: int, limit: int | None, expected: int) -> None:
    assert smaller_size(size, SizeRefusal(limit)) == expected


@pytest.mark.parametrize(
    ("n", "bad", "bound"), [(1, 1, 1), (2, 1, 3), (8, 1, 7), (8, 2, 13), (2048, 1, 23)]
)
def test_bisection_request_bound(n: int, bad: int, bound: int) -> None:
    assert bisection_request_bound(n, bad) == bound


def test_bisection_request_bound_rejects_zero() -> None:
    with pytest.raises(ValueError, match="n must be"):
        bisection_request_bound(0)


# --- the production job and program against a scripted server --------------------------------


class ScriptedServer:
    """Answers embeddings calls the way a real server would: the ``execute`` of a driver.

    Args:
        bad: texts the server rejects with a 400 naming no index.
        request_error: an error for every request (an unknown parameter, say).
        max_inputs: the most inputs per request; more get ``size_error``.
        transient: texts whose requests fail with a 500 (after "retries").
    """

    def __init__(
        self,
        *,
        bad: Iterable[str] = (),
        request_error: BaseException | None = None,
        max_inputs: int | None = None,
        size_error: BaseException | None = None,
        transient: Iterable[str] = (),
    ) -> None:
        self.bad = set(bad)
        self.request_error = request_error
        self.max_inputs = max_inputs
        self.size_error = size_error or status_error(
            413, body={"error": TEI_BATCH, "error_type": "Validation"}
        )
        self.transient = set(transient)
        self.requests: list[list[str]] = []

    def __call__(self, call: EmbeddingsCall) -> Reply:
        texts = call.request.inputs
        self.requests.append(list(texts))
        if self.request_error is not None:
            return Reply(error=self.request_error, attempts=1)
        if self.max_inputs is not None and len(texts) > self.max_inputs:
            return Reply(error=self.size_error, attempts=1)
        if self.bad.intersection(texts):
            return Reply(error=error(400, "Invalid input"), attempts=1)
        if self.transient.intersection(texts):
            return Reply(error=error(500, "server error"), attempts=5)
        vectors = [vector(text) for text in texts]
        return Reply(EmbeddingsPayload(vectors, len(texts), len(texts)), attempts=1)


def vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 997)]


def run(texts: list[object], server: ScriptedServer, **options: Any) -> BatchResult[list[float]]:
    """Run an ``embed_batch`` job over ``texts`` as the sync driver does, one unit at a time."""
    checked = BatchOptions.for_embeddings(
        options, default_model="m", default_concurrency=options.get("max_concurrency", 1)
    )
    job = EmbedJob(texts, checked, keep_values=True, base_url="http://test/v1")
    units = [*job.prepare(list(texts)), *job.finish()]
    for unit in units:
        if isinstance(unit, Rejected):
            job.reject(unit)
        else:
            drive(job.program(unit), server)  # type: ignore[arg-type]
    return job.state.result()


def assert_exact(result: BatchResult[list[float]], texts: list[str], bad: set[str]) -> None:
    """Every input exactly once: bad ones failed alone with the server's 400, the rest carry
    the server's own vector."""
    failed = {failure.index: failure for failure in result.failures}
    assert len(failed) == len(result.failures)
    for index, text in enumerate(texts):
        if text in bad:
            assert failed[index].error_type == "BadRequestError"
            assert failed[index].status == 400
            assert result.values[index] is None
        else:
            assert index not in failed, failed.get(index)
            assert result.values[index] == vector(text)


def test_two_bad_inputs_in_one_request_fail_alone_and_nothing_else_does() -> None:
    # Issue 12, row 1: both halves of the split failed alike, and the old code stopped the batch.
    texts = [f"text {i}" for i in range(1000)]
    bad = {texts[1], texts[6]}
    server = ScriptedServer(bad=bad)
    result = run(texts, server, batch_size=8)  # type: ignore[arg-type]
    assert_exact(result, texts, bad)
    assert result.stats.succeeded == 998
    assert result.stopped_by is None
    extra = len(server.requests) - math.ceil(1000 / 8)
    # One probe, then both halves at each of the 3 levels for each of the 2 bad inputs.
    assert extra <= 1 + 2 * 2 * 3
    assert [PROBE_TEXT] in server.requests
    assert result.stats.requests == 0  # counted by the facade's sink, not by this driver


def test_a_request_level_error_ends_the_batch_after_one_probe() -> None:
    texts = [f"text {i}" for i in range(400)]
    unknown = error(400, "Unrecognized request argument supplied: frobnicate")
    server = ScriptedServer(request_error=unknown)
    result = run(texts, server, batch_size=50)  # type: ignore[arg-type]
    assert len(server.requests) == 2  # the request, the probe; nothing more is sent
    assert server.requests[1] == [PROBE_TEXT]
    assert result.stats.failed == 400
    assert result.stats.not_sent == 350
    assert {failure.error_type for failure in result.failures} == {"BadRequestError"}
    assert result.stopped_by is not None
    assert result.stopped_by.index == 0
    assert [f.attempts for f in result.failures[:50]] == [1] * 50


def test_a_probe_is_not_needed_once_a_request_succeeded() -> None:
    texts = [f"text {i}" for i in range(16)]
    server = ScriptedServer(bad={texts[12]})
    state_result = run(texts, server, batch_size=8)  # type: ignore[arg-type]
    assert_exact(state_result, texts, {texts[12]})
    assert [PROBE_TEXT] not in server.requests  # the first request succeeded: proven


@pytest.mark.parametrize(
    ("max_inputs", "size_error", "expected_limit"),
    [
        (32, None, 32),  # TEI names its limit
        (32, status_error(413, body={}), 25),  # a bare 413: halve until it fits
        (16, error(422, "Too many inputs"), 12),
    ],
)
def test_a_request_too_large_is_split_and_the_smaller_size_kept(
    max_inputs: int, size_error: BaseException | None, expected_limit: int
) -> None:
    texts = [f"text {i}" for i in range(200 * 3)]
    server = ScriptedServer(max_inputs=max_inputs, size_error=size_error)
    result = run(texts, server, batch_size=200)  # type: ignore[arg-type]
    assert_exact(result, texts, set())
    assert result.stats.size_limit == expected_limit
    refused = [request for request in server.requests if len(request) > max_inputs]
    # Refused until the limit is known (halving at most log2 times); after that every request
    # of the job fits.
    assert len(refused) <= (200 // max_inputs).bit_length()
    assert all(len(request) <= expected_limit for request in server.requests[len(refused) :])


def test_a_transient_error_fails_its_half_only() -> None:
    texts = [f"text {i}" for i in range(8)]
    server = ScriptedServer(bad={texts[1]}, transient={texts[6]})
    result = run(texts, server, batch_size=8)  # type: ignore[arg-type]
    failed = {failure.index: failure for failure in result.failures}
    assert failed[1].error_type == "BadRequestError"
    # The half holding text 6 failed with a 500 after retries: its items fail with it.
    assert failed[6].error_type == "InternalServerError"
    assert failed[6].attempts == 5
    assert all(result.values[i] == vector(texts[i]) for i in range(8) if i not in failed)


def test_a_single_rejected_input_in_an_unproven_batch_fails_alone_after_the_probe() -> None:
    texts = ["only POISON here"]
    server = ScriptedServer(bad=set(texts))
    result = run(texts, server, batch_size=1)  # type: ignore[arg-type]
    assert server.requests == [texts, [PROBE_TEXT]]
    assert [(f.index, f.error_type) for f in result.failures] == [(0, "BadRequestError")]
    assert result.stopped_by is None


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 80),
    batch_size=st.integers(1, 16),
    data=st.data(),
)
def test_bisection_property(n: int, batch_size: int, data: st.DataObject) -> None:
    """Any number of bad inputs anywhere: each fails alone, the rest succeed, within the bound."""
    texts = [f"text {i}" for i in range(n)]
    bad_indices = data.draw(st.sets(st.integers(0, n - 1), max_size=n))
    bad = {texts[i] for i in bad_indices}
    server = ScriptedServer(bad=bad)
    result = run(texts, server, batch_size=batch_size)  # type: ignore[arg-type]
    if bad and len(bad) == n:
        # Nothing succeeded and the probe passed: still every input is judged on its own.
        assert {f.error_type for f in result.failures} == {"BadRequestError"}
    assert_exact(result, texts, bad)
    planned = math.ceil(n / batch_size)
    levels = (batch_size - 1).bit_length()
    assert len(server.requests) <= planned + 1 + 2 * len(bad) * levels
