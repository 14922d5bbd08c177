"""Helpers of the Batch API tests: clients on the loopback server, fast job options, checks."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from resilient_llm import AsyncResilientClient, BatchResult, ResilientClient, RetryPolicy
from resilient_llm.batch_api import BatchJobOptions
from resilient_llm.testing import MockOpenAIServer, embedding_vector

from ..conftest import TEST_KEY

PATIENT = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)
DIMS = 8


def fast(**changes: Any) -> BatchJobOptions:
    """Job options that poll every few milliseconds (the test server's batches end at once)."""
    changes.setdefault("poll_interval", 0.005)
    changes.setdefault("max_poll_interval", 0.02)
    return BatchJobOptions(**changes)


def sync_client(server: MockOpenAIServer, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", PATIENT)
    return ResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def async_client(server: MockOpenAIServer, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", PATIENT)
    return AsyncResilientClient(api_key=TEST_KEY, base_url=server.base_url, **kwargs)


def texts(n: int, prefix: str = "document number") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def close_to(got: Sequence[float] | None, want: Sequence[float]) -> bool:
    return (
        got is not None
        and len(got) == len(want)
        and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))
    )


def assert_vectors(
    result: BatchResult[Any], inputs: Sequence[str], skip: Collection[int] = ()
) -> None:
    """Every input not in `skip` has the vector the server's live endpoint gives its text."""
    assert len(result.values) == len(inputs)
    for index, text in enumerate(inputs):
        if index not in skip:
            assert close_to(result.values[index], embedding_vector(text, DIMS)), index


def assert_accounted_once(result: BatchResult[Any], total: int) -> None:
    """Every index a value or a failure, exactly once; the counts agree."""
    succeeded = {index for index, _ in result.succeeded()}
    failed = [failure.index for failure in result.failures]
    assert len(failed) == len(set(failed))
    assert succeeded.isdisjoint(failed)
    assert succeeded | set(failed) == set(range(total))
    assert result.stats.succeeded + result.stats.failed == result.stats.total == total
    assert len(result.values) == total
    for index in failed:
        assert result.values[index] is None


def job_batches(server: MockOpenAIServer) -> list[dict[str, Any]]:
    """The batches the server holds that a job created (oldest first)."""
    return [b for b in server.batches.batches() if (b["metadata"] or {}).get("resilient_llm_job")]


def assert_no_duplicate_batch(server: MockOpenAIServer) -> None:
    """No shard (or try of a shard) of any job got two batches."""
    keys = [
        (
            b["metadata"]["resilient_llm_job"],
            b["metadata"]["resilient_llm_shard"],
            b["metadata"]["resilient_llm_try"],
        )
        for b in job_batches(server)
    ]
    assert len(keys) == len(set(keys)), keys


def sent_custom_ids(server: MockOpenAIServer) -> list[str]:
    """Every custom_id in every batch the server ran, once per batch it was in."""
    return [
        line["custom_id"]
        for batch in job_batches(server)
        for line in server.batches.input_lines(batch["id"])
    ]


def state_document(path: str) -> dict[str, Any]:
    with open(path, "rb") as stream:
        document: dict[str, Any] = json.load(stream)
    return document
