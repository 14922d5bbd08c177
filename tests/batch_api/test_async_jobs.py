"""`AsyncBatchJob` on asyncio and trio: the same job as `BatchJob`, driven with await."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_llm import AsyncResilientClient
from resilient_llm.batch_api import AsyncBatchJob, BatchAPIUnsupported, BatchJob
from resilient_llm.testing import MockOpenAIServer, chat_reply_text

from .support import (
    DIMS,
    assert_accounted_once,
    assert_no_duplicate_batch,
    assert_vectors,
    async_client,
    fast,
    job_batches,
    sent_custom_ids,
    state_document,
    sync_client,
    texts,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with MockOpenAIServer() as running:
        yield running


async def embed_job(
    client: AsyncResilientClient, inputs: list[Any], tmp_path: Path, **options: Any
) -> AsyncBatchJob:
    return await AsyncBatchJob.embeddings(
        client, inputs, state=tmp_path / "job.json", dimensions=DIMS, options=fast(**options)
    )


async def test_round_trip_equals_embed_batch(server: MockOpenAIServer, tmp_path: Path) -> None:
    inputs = [*texts(30), "a POISON pill", ""]
    async with async_client(server) as client:
        result = await (await embed_job(client, inputs, tmp_path, max_lines=8)).run()
        live = await client.embed_batch(inputs, dimensions=DIMS)
    assert_accounted_once(result, 32)
    assert result.values == live.values
    assert [(f.index, f.status) for f in result.failures] == [(30, 400), (31, None)]
    assert_vectors(result, inputs, skip={30, 31})
    assert len(job_batches(server)) == 4
    assert_no_duplicate_batch(server)


async def test_expiry_and_transient_lines_are_resent(
    server: MockOpenAIServer, tmp_path: Path
) -> None:
    server.batches.expire_next_batch(after_lines=4)
    server.batches.fail_lines(["i9"], 500)
    inputs = texts(10)
    async with async_client(server) as client:
        result = await (await embed_job(client, inputs, tmp_path)).run()
    assert result.ok
    assert_vectors(result, inputs)
    first, second, third = job_batches(server)
    assert first["status"] == "expired"
    assert first["request_counts"]["completed"] == 4
    assert (second["request_counts"]["total"], third["request_counts"]["total"]) == (6, 1)
    sent = sent_custom_ids(server)
    assert (sent.count("i0"), sent.count("i5"), sent.count("i9")) == (1, 2, 3)
    assert (result.stats.timeouts, result.stats.retries) == (6, 7)


async def test_a_server_without_the_batch_api(server: MockOpenAIServer, tmp_path: Path) -> None:
    server.batches.available = False
    async with async_client(server) as client:
        job = await embed_job(client, texts(3), tmp_path)
        with pytest.raises(BatchAPIUnsupported, match="has no Batch API"):
            await job.run()
    assert server.stats.total_requests <= 2


async def test_submit_now_collect_later(server: MockOpenAIServer, tmp_path: Path) -> None:
    server.batches.configure(processing_seconds=3600)
    inputs = texts(12)
    async with async_client(server) as client:
        job = await embed_job(client, inputs, tmp_path, max_lines=5)
        assert not (await job.submit()).finished
        later = await AsyncBatchJob.open(client, job.state_path)
        assert await later.collect() is None
        server.batches.advance(3600)
        result = await later.collect()
    assert result is not None
    assert result.ok
    assert_vectors(result, inputs)
    with sync_client(server) as sync:  # the same state file serves the sync job too
        again = BatchJob.open(sync, job.state_path).collect()
    assert again is not None
    assert again.values == result.values


async def test_cancel(server: MockOpenAIServer, tmp_path: Path) -> None:
    server.batches.configure(processing_seconds=100)
    async with async_client(server) as client:
        job = await embed_job(client, texts(20), tmp_path, max_lines=10)
        await job.submit()
        server.batches.advance(50)
        assert (await job.cancel()).cancelled
        result = await job.wait()
    assert_accounted_once(result, 20)
    assert result.stats.succeeded == 10
    assert len(sent_custom_ids(server)) == 20  # nothing sent again


async def test_cancelling_the_waiting_task_leaves_a_resumable_job(
    server: MockOpenAIServer, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=3600)
    inputs = texts(6)
    async with async_client(server) as client:
        job = await embed_job(client, inputs, tmp_path)
        with anyio.move_on_after(0.3):
            await job.wait()
        assert state_document(job.state_path)["shards"][0]["stage"] == "created"
        server.batches.advance(3600)
        result = await (await AsyncBatchJob.open(client, job.state_path)).run()
    assert result.ok
    assert len(job_batches(server)) == 1


async def test_fallback_and_chat(server: MockOpenAIServer, tmp_path: Path) -> None:
    server.batches.fail_lines(["i1"], 503, times=5)
    async with async_client(server) as client:
        job = await embed_job(client, texts(3), tmp_path, max_resubmits=0, fallback=True)
        result = await job.run()
        chat = await AsyncBatchJob.chat(
            client, ["hello there"], state=tmp_path / "chat.json", options=fast()
        )
        replies = await chat.run()
    assert result.ok
    assert server.stats.requests_by_path["/v1/embeddings"] == 1
    assert_vectors(result, texts(3))
    assert replies.values == [chat_reply_text("hello there")]


def test_the_twins_have_the_same_api() -> None:
    public = [name for name in dir(BatchJob) if not name.startswith("_")]
    assert public == [name for name in dir(AsyncBatchJob) if not name.startswith("_")]
    for name in public:
        sync, twin = getattr(BatchJob, name), getattr(AsyncBatchJob, name)
        if callable(sync):
            assert list(inspect.signature(sync).parameters) == list(
                inspect.signature(twin).parameters
            ), name
