"""Batch API jobs (`BatchJob`) against the loopback server: accounting, resubmission, limits."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import openai
import pytest

from resilient_llm import BatchResult, ResilientClient, RetryPolicy
from resilient_llm.batch_api import (
    BatchAPIUnsupported,
    BatchJob,
    BatchJobOptions,
    BatchLineError,
)
from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text, embedding_vector

from .support import (
    DIMS,
    assert_accounted_once,
    assert_no_duplicate_batch,
    assert_vectors,
    close_to,
    fast,
    job_batches,
    sent_custom_ids,
    state_document,
    sync_client,
    texts,
)


@pytest.fixture
def server() -> Any:
    with MockOpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: MockOpenAIServer) -> Any:
    with sync_client(server) as made:
        yield made


def embed_job(
    client: ResilientClient, inputs: list[Any], tmp_path: Path, **options: Any
) -> BatchJob:
    return BatchJob.embeddings(
        client, inputs, state=tmp_path / "job.json", dimensions=DIMS, options=fast(**options)
    )


# ---------------------------------------------------------------------- round trip


def test_round_trip_equals_embed_batch(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    inputs = [*texts(40), "", 7]
    result = embed_job(client, inputs, tmp_path).run()
    live = client.embed_batch(inputs, dimensions=DIMS)

    assert isinstance(result, BatchResult)
    assert_accounted_once(result, len(inputs))
    assert result.values == live.values  # the very same vectors, None where both failed
    assert (
        [(f.index, f.error_type) for f in result.failures]
        == [(f.index, f.error_type) for f in live.failures]
        == [(40, "InvalidInput"), (41, "InvalidInput")]
    )
    assert_vectors(result, inputs, skip={40, 41})
    batches = job_batches(server)
    assert len(batches) == 1
    assert result.stats.prompt_tokens == batches[0]["usage"]["input_tokens"] > 0
    assert result.stats.total_tokens == batches[0]["usage"]["total_tokens"]
    assert result.stats.requests == 40  # lines sent; bad inputs never were
    assert len(sent_custom_ids(server)) == 40
    assert all(
        line["body"]["dimensions"] == DIMS for line in server.batches.input_lines(batches[0]["id"])
    )


def test_120000_inputs_split_by_the_embedding_inputs_limit(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    # 100 inputs a line: the 50,000 embedding inputs per batch is the limit that splits.
    inputs = texts(120_000, "t")
    result = embed_job(client, inputs, tmp_path, inputs_per_line=100).run()
    assert_accounted_once(result, len(inputs))
    assert result.ok
    batches = job_batches(server)
    assert sorted(b["request_counts"]["total"] for b in batches) == [200, 500, 500]
    assert all(b["status"] == "completed" for b in batches)
    first = server.batches.input_lines(batches[0]["id"])[0]
    assert first["custom_id"] == "i0+100"
    assert first["body"]["input"] == inputs[:100]
    for index in range(0, 120_000, 997):
        assert close_to(result.values[index], embedding_vector(inputs[index], DIMS)), index
    assert result.stats.requests == 1200
    assert_no_duplicate_batch(server)


@pytest.mark.skipif(
    os.environ.get("RESILIENT_LLM_FULL") != "1",
    reason="120,000 lines take ~10 s of CPU: set RESILIENT_LLM_FULL=1",
)
def test_120000_inputs_at_the_real_line_limit(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    inputs = texts(120_000, "t")
    result = embed_job(client, inputs, tmp_path).run()
    assert_accounted_once(result, len(inputs))
    assert result.ok
    batches = job_batches(server)
    assert sorted(b["request_counts"]["total"] for b in batches) == [20_000, 50_000, 50_000]
    for index in range(0, 120_000, 997):
        assert close_to(result.values[index], embedding_vector(inputs[index], DIMS)), index
    assert_no_duplicate_batch(server)


def test_inputs_sharing_lines(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    inputs = texts(23)
    inputs[7] = ""  # never sent: the lines around it hold consecutive inputs only
    inputs[12] = "a POISON pill"  # fails its whole line...
    server.batches.expire_next_batch(after_lines=2)  # ...and lines of an expired batch go again
    result = embed_job(client, inputs, tmp_path, inputs_per_line=5).run()
    assert_accounted_once(result, 23)
    assert [(f.index, f.status) for f in result.failures] == [
        (7, None),
        *((index, 400) for index in range(8, 13)),
    ]
    assert_vectors(result, inputs, skip=set(range(7, 13)))
    first, second = job_batches(server)
    ids = [line["custom_id"] for line in server.batches.input_lines(first["id"])]
    assert ids == ["i0+5", "i5+2", "i8+5", "i13+5", "i18+5"]
    resent = [line["custom_id"] for line in server.batches.input_lines(second["id"])]
    assert resent == ["i8+5", "i13+5", "i18+5"]  # whole lines, as they were
    # With the fallback, the live batch isolates the poisoned input by bisection.
    fixed = BatchJob.embeddings(
        client,
        inputs,
        state=tmp_path / "fallback.json",
        dimensions=DIMS,
        options=fast(inputs_per_line=5, fallback=True),
    ).run()
    assert [(f.index, f.status) for f in fixed.failures] == [(7, None), (12, 400)]
    assert_vectors(fixed, inputs, skip={7, 12})


def test_small_limits_split_by_lines_and_by_bytes(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    # The server refuses what the library must never send: a batch over its limits fails.
    server.batches.configure(max_lines=25, max_file_bytes=3000)
    inputs = texts(100)
    result = embed_job(client, inputs, tmp_path, max_lines=25, max_bytes=3000).run()
    assert result.ok
    assert_vectors(result, inputs)
    batches = job_batches(server)
    assert all(b["status"] == "completed" for b in batches)
    sizes = [b["request_counts"]["total"] for b in batches]
    assert sum(sizes) == 100
    assert max(sizes) <= 25
    assert all(f["bytes"] <= 3000 for f in server.batches.files() if f["purpose"] == "batch")
    assert len(batches) > 4  # 3000 bytes hold fewer than 25 lines: bytes split too


# ---------------------------------------------------------------------- resubmission


def test_expiry_keeps_finished_lines_and_resubmits_the_rest(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.expire_next_batch(after_lines=12)
    inputs = texts(30)
    result = embed_job(client, inputs, tmp_path).run()
    assert result.ok
    assert_vectors(result, inputs)
    first, second = job_batches(server)
    assert first["status"] == "expired"
    assert first["request_counts"]["completed"] == 12
    finished = {
        json.loads(line)["custom_id"]
        for line in server.batches.file_content(first["output_file_id"]).splitlines()
    }
    resent = [line["custom_id"] for line in server.batches.input_lines(second["id"])]
    assert len(finished) == 12
    assert len(resent) == 18
    assert finished.isdisjoint(resent)  # finished lines kept, never sent again
    assert result.stats.timeouts == 18
    assert result.stats.retries == 18
    assert result.stats.requests == 48
    # Another process assembles the same result from the files, once per input.
    again = BatchJob.open(client, str(tmp_path / "job.json")).collect()
    assert again is not None
    assert again.values == result.values
    assert again.stats.timeouts == 18


def test_expiry_at_the_end_of_the_window_with_the_clock(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    # 10 lines of 3 h each run out of the 24 h window after 8; the 2 left take 6 h. Each poll
    # moves the clock 4 h.
    server.batches.configure(line_seconds=3 * 3600, advance_per_poll=4 * 3600)
    inputs = texts(10)
    job = embed_job(client, inputs, tmp_path)
    result = job.run()
    assert result.ok
    assert_vectors(result, inputs)
    first, second = job_batches(server)
    assert (first["status"], first["request_counts"]["completed"]) == ("expired", 8)
    assert first["expired_at"] == first["expires_at"]
    assert (second["status"], second["request_counts"]["total"]) == ("completed", 2)
    assert result.stats.timeouts == 2


def test_poisoned_lines_fail_alone_and_are_never_resent(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    inputs = texts(20)
    inputs[3] = "a POISON pill"
    inputs[17] = "more POISON"
    result = embed_job(client, inputs, tmp_path).run()
    assert_accounted_once(result, 20)
    assert [(f.index, f.status, f.error_type, f.attempts) for f in result.failures] == [
        (3, 400, "BadRequestError", 1),
        (17, 400, "BadRequestError", 1),
    ]
    assert "poison" in result.failures[0].message
    assert result.failures[0].preview.startswith("a POISON pill")
    assert_vectors(result, inputs, skip={3, 17})
    assert len(job_batches(server)) == 1


def test_transient_lines_are_resent_a_bounded_number_of_times(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.fail_lines(["i2"], 429)
    server.batches.fail_lines(["i5"], 500, times=2)
    server.batches.fail_lines(["i7"], 503, times=10)
    inputs = texts(10)
    result = embed_job(client, inputs, tmp_path, max_resubmits=2).run()
    assert_accounted_once(result, 10)
    assert [(f.index, f.status, f.error_type, f.attempts) for f in result.failures] == [
        (7, 503, "InternalServerError", 3)
    ]
    again = BatchJob.open(client, str(tmp_path / "job.json")).collect()
    assert again is not None
    assert [(f.index, f.status, f.attempts) for f in again.failures] == [(7, 503, 3)]
    assert_vectors(result, inputs, skip={7})
    sent = sent_custom_ids(server)
    assert (sent.count("i2"), sent.count("i5"), sent.count("i7"), sent.count("i0")) == (2, 3, 3, 1)
    assert result.stats.rate_limited == 1
    assert result.stats.retries == 1 + 2 + 2


def test_a_wrong_answer_never_becomes_data(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.corrupt_lines(["i1"])  # once: the resubmission gets the real vector
    server.batches.corrupt_lines(["i4"], times=10)  # always
    inputs = texts(6)
    result = embed_job(client, inputs, tmp_path, max_resubmits=1).run()
    assert [f.index for f in result.failures] == [4]
    assert result.values[4] is None
    assert result.failures[0].error_type == "InvalidResponse"
    assert "is empty" in result.failures[0].message
    assert_vectors(result, inputs, skip={4})


def test_whole_batch_failures(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.fail_next_batch("server_error", "try later")  # transient: sent again
    inputs = texts(5)
    result = embed_job(client, inputs, tmp_path).run()
    assert result.ok
    assert [b["status"] for b in job_batches(server)] == ["failed", "completed"]

    server.batches.fail_next_batch("invalid_json_line", "bad line", line=2)
    result = BatchJob.embeddings(
        client, inputs, state=tmp_path / "other.json", dimensions=DIMS, options=fast()
    ).run()
    assert [(f.index, f.error_type) for f in result.failures] == [(1, "BatchLineError")]
    assert "invalid_json_line" in result.failures[0].message
    assert_vectors(result, inputs, skip={1})


def test_a_server_without_the_batch_api_gets_one_clear_error(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.available = False
    job = embed_job(client, texts(10), tmp_path)
    with pytest.raises(BatchAPIUnsupported) as caught:
        job.run()
    assert server.base_url in str(caught.value)
    assert caught.value.base_url.rstrip("/") == server.base_url
    assert caught.value.status == 404
    assert isinstance(caught.value.__cause__, openai.NotFoundError)
    assert server.stats.total_requests <= 2
    assert state_document(job.state_path)["shards"][0]["stage"] == "planned"


# ---------------------------------------------------------------------- lifecycle


def test_submit_now_collect_later_from_another_client(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=3600)
    inputs = texts(30)
    job = embed_job(client, inputs, tmp_path, max_lines=10)
    progress = job.submit()
    assert progress.shards == {"validating": 3}
    assert not progress.finished
    assert job.collect() is None
    assert job.progress().shards == {"in_progress": 3}
    with sync_client(server) as other:
        later = BatchJob.open(other, job.state_path)
        assert later.id == job.id
        assert later.kind == "embeddings"
        assert later.collect() is None
        server.batches.advance(3600)
        result = later.collect()
    assert result is not None
    assert result.ok
    assert_vectors(result, inputs)
    assert later.progress().finished
    assert len(job_batches(server)) == 3
    again = BatchJob.open(client, job.state_path).collect()  # re-read from the files
    assert again is not None
    assert again.values == result.values


def test_max_in_flight_bounds_running_batches(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=100, advance_per_poll=50)
    result = embed_job(client, texts(40), tmp_path, max_lines=10, max_in_flight=1).run()
    assert result.ok
    assert server.batches.peak_in_progress == 1
    assert len(job_batches(server)) == 4


def test_the_enqueued_token_limit_is_learned(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    # Room for two shards of tokens (70-80 each) at a time: the third is refused, queued, and
    # sent later.
    server.batches.configure(processing_seconds=100, advance_per_poll=40, enqueued_token_limit=170)
    inputs = texts(40, "words words words words words")
    result = embed_job(client, inputs, tmp_path, max_lines=10).run()
    assert result.ok
    assert_vectors(result, inputs)
    statuses = [b["status"] for b in job_batches(server)]
    assert statuses.count("failed") >= 1
    assert statuses.count("completed") == 4
    assert all(
        b["errors"]["data"][0]["code"] == "token_limit_exceeded"
        for b in job_batches(server)
        if b["status"] == "failed"
    )
    assert state_document(str(tmp_path / "job.json"))["in_flight_limit"] == 2
    assert_no_duplicate_batch(server)


def test_user_cancel_fails_what_did_not_run_and_resends_nothing(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=100)
    inputs = texts(30)
    job = embed_job(client, inputs, tmp_path, max_lines=10, max_in_flight=2)
    job.submit()
    server.batches.advance(40)  # 4 lines of each running shard done
    progress = job.cancel()
    assert progress.cancelled
    result = job.wait()
    assert_accounted_once(result, 30)
    assert result.stats.succeeded == 8
    assert_vectors(result, inputs, skip={f.index for f in result.failures})
    never = [f for f in result.failures if f.index >= 20]
    assert len(never) == 10
    assert all(f.attempts == 0 for f in never)
    assert all(f.error_type == "BatchLineError" for f in result.failures)
    assert len(job_batches(server)) == 2  # the third shard was never created
    assert all(b["status"] == "cancelled" for b in job_batches(server))
    assert len(sent_custom_ids(server)) == 20


def test_system_cancel_is_resent(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.cancel_next_batch(after_lines=3)
    inputs = texts(10)
    result = embed_job(client, inputs, tmp_path).run()
    assert result.ok
    assert_vectors(result, inputs)
    assert [b["status"] for b in job_batches(server)] == ["cancelled", "completed"]


def test_fallback_runs_leftovers_live(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.fail_lines(["i3", "i6"], 500, times=5)
    inputs = texts(10)
    inputs[6] = "live POISON"
    result = embed_job(client, inputs, tmp_path, max_resubmits=1, fallback=True).run()
    assert_accounted_once(result, 10)
    assert [(f.index, f.status) for f in result.failures] == [(6, 400)]
    assert result.failures[0].attempts >= 3  # two batch attempts, then live
    assert_vectors(result, inputs, skip={6})
    live = server.stats.requests_by_path["/v1/embeddings"]
    assert live >= 2  # embed_batch isolated the poisoned input
    assert result.stats.requests == 10 + 2 + live


def test_rerunning_the_same_job_resumes_it_and_other_work_is_refused(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=100)
    inputs = texts(10)
    first = embed_job(client, inputs, tmp_path)
    first.submit()
    again = embed_job(client, iter(inputs), tmp_path)  # a generator: read once, fingerprinted
    assert again.id == first.id
    server.batches.advance(100)
    assert again.run().ok
    assert len(job_batches(server)) == 1
    with pytest.raises(ValueError, match="inputs differ"):
        embed_job(client, texts(10, "other"), tmp_path)
    with pytest.raises(ValueError, match="request options"):
        BatchJob.embeddings(client, inputs, state=tmp_path / "job.json", dimensions=16)
    with pytest.raises(ValueError, match="number of inputs"):
        embed_job(client, texts(11), tmp_path)


def test_wait_timeout_leaves_the_job_resumable(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.configure(processing_seconds=3600)
    job = embed_job(client, texts(5), tmp_path)
    with pytest.raises(TimeoutError, match="not finished"):
        job.wait(timeout=0.05)
    server.batches.advance(3600)
    assert BatchJob.open(client, job.state_path).run().ok


def test_failed_and_timed_out_uploads(server: MockOpenAIServer, tmp_path: Path) -> None:
    impatient = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    with sync_client(server, retry=impatient, timeouts=0.3) as client:
        # An upload that times out is retried by the client: the job never notices.
        server.script(Fault.hang(), path="/v1/files")
        assert embed_job(client, texts(5), tmp_path).run().ok
        # One that keeps failing ends the pass; the job goes on from its state later.
        server.script(Fault.status(500), Fault.status(500), path="/v1/files")
        job = BatchJob.embeddings(
            client, texts(5), state=tmp_path / "again.json", dimensions=DIMS, options=fast()
        )
        with pytest.raises(openai.InternalServerError):
            job.submit()
        assert state_document(job.state_path)["shards"][0]["stage"] == "planned"
        assert job.run().ok
    assert len(job_batches(server)) == 2
    uploads = [r for r in server.requests if r.path == "/v1/files" and r.method == "POST"]
    assert [r.status for r in uploads] == [None, 200, 500, 500, 200]


def test_a_lost_create_answer_does_not_create_a_second_batch(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    # The first /v1/batches request is the job's look-up (GET); the second, the create, is
    # carried out by the server and then its connection reset: the client retries.
    server.script(Fault.latency(0), Fault.reset(), path="/v1/batches")
    result = embed_job(client, texts(5), tmp_path).run()
    assert result.ok
    assert len(job_batches(server)) == 1
    assert server.stats.faults_injected.get("reset") == 1


def test_wait_rides_out_failed_polls(
    server: MockOpenAIServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sync_client(server, retry=RetryPolicy(max_attempts=1)) as client:
        server.batches.configure(processing_seconds=100, advance_per_poll=100)
        job = embed_job(client, texts(5), tmp_path)
        job.submit()
        batch_id = job_batches(server)[0]["id"]
        server.script(Fault.status(503), Fault.status(502), path=f"/v1/batches/{batch_id}")
        with caplog.at_level(logging.WARNING, "resilient_llm"):
            assert job.wait().ok
    assert sum("looking at the batches failed" in r.message for r in caplog.records) == 2


# ---------------------------------------------------------------------- chat and state


def test_chat_and_summaries(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    prompts = ["alpha beta gamma", [{"role": "user", "content": "delta epsilon"}], "  "]
    server.batches.corrupt_lines(["i0"])  # an empty text is not an answer: sent again
    chat = BatchJob.chat(
        client, prompts, state=tmp_path / "chat.json", system="Be brief.", options=fast()
    )
    result = chat.run()
    assert result.values[:2] == [
        chat_reply_text("alpha beta gamma"),
        chat_reply_text("delta epsilon"),
    ]
    assert [(f.index, f.error_type) for f in result.failures] == [(2, "InvalidInput")]
    sent = server.batches.input_lines(job_batches(server)[0]["id"])
    assert sent[0]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert result.stats.total_tokens > result.stats.prompt_tokens > 0

    summaries = BatchJob.summaries(
        client, ["one two three four"], state=tmp_path / "sum.json", max_words=5, options=fast()
    ).run()
    assert summaries.values == [chat_reply_text("one two three four")]
    body = server.batches.input_lines(job_batches(server)[-1]["id"])[0]["body"]
    assert "at most 5 words" in body["messages"][0]["content"]


def test_state_file_is_complete_and_written_atomically(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    job = embed_job(client, [*texts(25), None], tmp_path, max_lines=10)
    document = state_document(job.state_path)
    assert document["format"] == "resilient_llm.batch_job"
    assert document["version"] == 1
    assert document["total"] == 26
    assert document["fingerprint"].startswith("sha256:")
    assert [s["ranges"] for s in document["shards"]] == [[[0, 10]], [[10, 20]], [[20, 25]]]
    assert [s["stage"] for s in document["shards"]] == ["planned"] * 3
    assert document["rejected"][0]["index"] == 25
    job.run()
    document = state_document(job.state_path)
    for shard in document["shards"]:
        assert shard["stage"] == "collected"
        assert shard["file_id"]
        assert shard["batch_id"]
        assert shard["output_file_id"]
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (tmp_path / "job.json.shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]


def test_bad_arguments_fail_before_any_work(client: ResilientClient, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="ResilientClient"):
        BatchJob.embeddings(object(), ["a"], state=tmp_path / "x.json")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        BatchJob.embeddings(client, "one text", state=tmp_path / "x.json")
    with pytest.raises(ValueError, match="dimensions"):
        BatchJob.embeddings(client, ["a"], state=tmp_path / "x.json", dimensions=0)
    with pytest.raises(ValueError, match="stream"):
        BatchJob.chat(client, ["a"], state=tmp_path / "x.json", stream=True)
    with pytest.raises(ValueError, match="max_lines"):
        BatchJobOptions(max_lines=60_000)
    with pytest.raises(ValueError, match="own"):
        BatchJobOptions(metadata={"resilient_llm_job": "x"})
    with pytest.raises(FileNotFoundError):
        BatchJob.open(client, tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="not a resilient_llm batch job state"):
        BatchJob.open(client, tmp_path / "junk.json")
    assert not os.path.exists(tmp_path / "x.json")


def test_line_errors_are_typed(
    server: MockOpenAIServer, client: ResilientClient, tmp_path: Path
) -> None:
    server.batches.expire_next_batch(after_lines=0)
    result = embed_job(client, texts(3), tmp_path, max_resubmits=0).run()
    assert [f.error_type for f in result.failures] == ["BatchLineError"] * 3
    assert all("batch_expired" in f.message for f in result.failures)
    assert issubclass(BatchLineError, Exception)
