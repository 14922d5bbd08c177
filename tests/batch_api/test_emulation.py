"""The testing kit's Batch API (shapes, checks, clock, faults) as the official clients see it."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text, embedding_vector

EMBED = "text-embedding-3-small"
CHAT = "gpt-4o-mini"

# Required properties, copied from OpenAI's OpenAPI description.
BATCH_REQUIRED = {
    "id",
    "object",
    "endpoint",
    "input_file_id",
    "completion_window",
    "status",
    "created_at",
}
BATCH_PROPERTIES = BATCH_REQUIRED | {
    "model",
    "errors",
    "output_file_id",
    "error_file_id",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "usage",
    "metadata",
}
FILE_REQUIRED = {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}
LIST_BATCHES_REQUIRED = {"object", "data", "has_more"}
LIST_FILES_REQUIRED = {"object", "data", "first_id", "last_id", "has_more"}
DELETED_REQUIRED = {"id", "object", "deleted"}
COUNTS_REQUIRED = {"total", "completed", "failed"}
USAGE_REQUIRED = {
    "input_tokens",
    "input_tokens_details",
    "output_tokens",
    "output_tokens_details",
    "total_tokens",
}
OUTPUT_LINE = {"id", "custom_id", "response", "error"}


@pytest.fixture
def server() -> Iterator[MockOpenAIServer]:
    with MockOpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: MockOpenAIServer) -> Iterator[openai.OpenAI]:
    official = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    yield official
    official.close()


def embedding_line(custom_id: str, text: Any, **body: Any) -> dict[str, Any]:
    payload = {"model": EMBED, "input": text, "dimensions": 8, "encoding_format": "float", **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": payload}


def chat_line(custom_id: str, text: str) -> dict[str, Any]:
    body = {"model": CHAT, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def start(
    client: openai.OpenAI,
    lines: list[dict[str, Any]],
    endpoint: str = "/v1/embeddings",
    **create: Any,
) -> Any:
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **create,
    )


def read_lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    content = client.files.content(file_id).content
    return {json.loads(line)["custom_id"]: json.loads(line) for line in content.splitlines()}


def raw_get(server: MockOpenAIServer, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers={"authorization": "Bearer sk-test"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# ---------------------------------------------------------------------- shapes


def test_objects_have_the_openapi_shapes_and_parse_in_the_official_client(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    batch = start(client, [embedding_line("a", "hello")], metadata={"team": "search"})
    assert isinstance(batch, openai.types.Batch)
    assert batch.status == "validating"
    assert batch.metadata == {"team": "search"}

    status, raw = raw_get(server, f"/v1/batches/{batch.id}")
    assert status == 200
    assert BATCH_REQUIRED <= raw.keys() <= BATCH_PROPERTIES
    assert raw["object"] == "batch"
    assert raw["status"] == "completed"
    assert raw["request_counts"].keys() == COUNTS_REQUIRED
    assert raw["usage"].keys() == USAGE_REQUIRED
    for stamp in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "expires_at"):
        assert isinstance(raw[stamp], int)
    assert raw["expires_at"] == raw["created_at"] + 24 * 3600

    status, raw_file = raw_get(server, f"/v1/files/{raw['input_file_id']}")
    assert status == 200
    assert raw_file.keys() >= FILE_REQUIRED
    assert raw_file["purpose"] == "batch"
    status, listed = raw_get(server, "/v1/batches")
    assert status == 200
    assert listed.keys() >= LIST_BATCHES_REQUIRED
    assert listed["data"][0].keys() >= BATCH_REQUIRED
    status, files = raw_get(server, "/v1/files")
    assert status == 200
    assert files.keys() >= LIST_FILES_REQUIRED

    done = client.batches.retrieve(batch.id)
    assert isinstance(done.request_counts, openai.types.BatchRequestCounts)
    assert (done.request_counts.total, done.request_counts.completed) == (1, 1)
    assert done.usage is not None
    assert done.usage.input_tokens == done.usage.total_tokens > 0
    output = client.files.retrieve(done.output_file_id or "")
    assert isinstance(output, openai.types.FileObject)
    assert output.purpose == "batch_output"
    line = read_lines(client, done.output_file_id)["a"]
    assert set(line) == OUTPUT_LINE
    assert line["error"] is None
    assert line["response"]["status_code"] == 200
    assert line["response"]["request_id"].startswith("req_")

    deleted = client.files.delete(output.id)
    assert (deleted.id, deleted.deleted) == (output.id, True)
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.files.retrieve(output.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_lines_run_through_the_live_handlers(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    texts = {f"i{n}": f"text {n}" for n in range(30)}
    lines = [embedding_line(cid, text) for cid, text in texts.items()]
    lines.append(embedding_line("poisoned", "a POISON pill"))
    batch = client.batches.retrieve(start(client, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (30, 1)

    output = read_lines(client, batch.output_file_id)
    assert output.keys() == texts.keys()
    for cid, text in texts.items():
        vector = output[cid]["response"]["body"]["data"][0]["embedding"]
        live = client.embeddings.create(model=EMBED, input=text, dimensions=8)
        assert vector == live.data[0].embedding == pytest.approx(embedding_vector(text, 8))
    order = [
        json.loads(line)["custom_id"]
        for line in client.files.content(batch.output_file_id or "").content.splitlines()
    ]
    assert order != sorted(order, key=lambda cid: int(cid[1:]))  # shuffled, matched by custom_id

    errors = read_lines(client, batch.error_file_id)
    assert errors.keys() == {"poisoned"}
    assert errors["poisoned"]["response"]["status_code"] == 400
    assert "poison" in errors["poisoned"]["response"]["body"]["error"]["message"]
    assert batch.usage is not None
    assert batch.usage.input_tokens == sum(max(1, len(t) // 4) for t in texts.values())


def test_chat_lines_and_base64_embeddings(client: openai.OpenAI) -> None:
    chat = client.batches.retrieve(
        start(client, [chat_line("c1", "one two three")], "/v1/chat/completions").id
    )
    body = read_lines(client, chat.output_file_id)["c1"]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == chat_reply_text("one two three")
    assert chat.usage is not None
    assert chat.usage.output_tokens > 0

    b64 = client.batches.retrieve(
        start(client, [embedding_line("e", "hi", encoding_format="base64")]).id
    )
    body = read_lines(client, b64.output_file_id)["e"]["response"]["body"]
    assert isinstance(body["data"][0]["embedding"], str)


def test_all_failed_batch_has_no_output_file(client: openai.OpenAI) -> None:
    batch = client.batches.retrieve(
        start(client, [embedding_line("p", "POISON"), embedding_line("q", "")]).id
    )
    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.error_file_id is not None
    assert read_lines(client, batch.error_file_id).keys() == {"p", "q"}


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        (b'{"custom_id": "a", "method": "POST"\n', "invalid_json_line", 1),
        (jsonl([embedding_line("a", "x"), embedding_line("a", "y")]), "duplicate_custom_id", 2),
        (
            jsonl([embedding_line("a", "x"), {**embedding_line("b", "y"), "method": "GET"}]),
            "invalid_method",
            2,
        ),
        (jsonl([embedding_line("a", "x"), chat_line("b", "y")]), "url_mismatch", 2),
        (
            jsonl(
                [embedding_line("a", "x"), embedding_line("b", "y", model="text-embedding-3-large")]
            ),
            "model_mismatch",
            2,
        ),
        (b"\n\n", "empty_file", None),
    ],
)
def test_bad_input_files_fail_the_batch_with_errors_data(
    client: openai.OpenAI, lines: bytes, code: str, line: int | None
) -> None:
    uploaded = client.files.create(file=("bad.jsonl", lines), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert batch.errors.data
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == (code, line)
    assert batch.output_file_id is None
    assert batch.error_file_id is None


def test_limits_of_lines_inputs_and_bytes(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.configure(max_lines=3, max_embedding_inputs=4, max_file_bytes=2000)
    ok = client.batches.retrieve(start(client, [embedding_line(f"{n}", "x") for n in range(3)]).id)
    assert ok.status == "completed"
    too_many = client.batches.retrieve(
        start(client, [embedding_line(f"{n}", "x") for n in range(4)]).id
    )
    assert too_many.status == "failed"
    assert too_many.errors
    assert too_many.errors.data
    assert too_many.errors.data[0].code == "too_many_tasks"
    inputs = client.batches.retrieve(
        start(client, [embedding_line("a", ["x", "y", "z"]), embedding_line("b", ["u", "v"])]).id
    )
    assert inputs.status == "failed"
    assert inputs.errors
    assert inputs.errors.data
    assert "embedding inputs" in (inputs.errors.data[0].message or "")
    with pytest.raises(openai.BadRequestError, match="too large"):
        client.files.create(file=("big.jsonl", b"x" * 2001), purpose="batch")


def test_upload_and_create_are_checked(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("a.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match=r"\.jsonl"):
        client.files.create(file=("a.csv", b"{}"), purpose="batch")
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    for kwargs, match in [
        ({"input_file_id": "file-missing", "endpoint": "/v1/embeddings"}, "not found"),
        ({"input_file_id": other.id, "endpoint": "/v1/embeddings"}, "purpose"),
        ({"input_file_id": other.id, "endpoint": "/v1/nope"}, "endpoint"),
    ]:
        with pytest.raises(openai.BadRequestError, match=match):
            client.batches.create(completion_window="24h", **kwargs)  # type: ignore[arg-type]
    batch_file = client.files.create(
        file=("a.jsonl", jsonl([embedding_line("a", "x")])), purpose="batch"
    )
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=batch_file.id,
            endpoint="/v1/embeddings",
            completion_window="1h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.batches.create(
            input_file_id=batch_file.id,
            endpoint="/v1/embeddings",
            completion_window="24h",
            metadata={f"k{n}": "v" for n in range(17)},
        )


# ---------------------------------------------------------------------- clock


def test_status_follows_the_clock_and_lines_run_over_processing_time(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    server.batches.configure(validating_seconds=10, processing_seconds=100, finalizing_seconds=5)
    batch = start(client, [embedding_line(f"i{n}", f"t {n}") for n in range(10)])
    assert client.batches.retrieve(batch.id).status == "validating"
    server.batches.advance(10)
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"
    assert running.in_progress_at == running.created_at + 10
    server.batches.advance(50)
    half = client.batches.retrieve(batch.id)
    assert half.request_counts is not None
    assert 5 <= half.request_counts.completed < 10
    server.batches.advance(50)
    assert client.batches.retrieve(batch.id).status == "finalizing"
    server.batches.advance(5)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.completed_at == (done.finalizing_at or 0) + 5
    assert len(read_lines(client, done.output_file_id)) == 10


def test_expiry_keeps_partial_output_and_reports_the_rest(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    server.batches.configure(processing_seconds=48 * 3600)  # twice the window
    batch = start(client, [embedding_line(f"i{n}", f"t {n}") for n in range(10)])
    server.batches.advance(24 * 3600)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired"
    assert expired.expired_at == expired.expires_at
    output = read_lines(client, expired.output_file_id)
    errors = read_lines(client, expired.error_file_id)
    assert len(output) == 5
    assert output.keys() | errors.keys() == {f"i{n}" for n in range(10)}
    for line in errors.values():
        assert line["response"] is None
        assert line["error"]["code"] == "batch_expired"


def test_advance_per_poll_moves_the_clock(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.configure(processing_seconds=3600, advance_per_poll=1800)
    batch = start(client, [embedding_line("a", "x")])
    statuses = [client.batches.retrieve(batch.id).status for _ in range(3)]
    assert statuses[0] == "in_progress"
    assert statuses[-1] == "completed"
    assert server.batches.now >= time.time() + 3 * 1800 - 5


def test_list_pages_newest_first(client: openai.OpenAI) -> None:
    made = [start(client, [embedding_line("a", f"x{n}")]).id for n in range(5)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2]
    assert first.has_more
    rest = client.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in rest.data] == made[::-1][2:4]
    assert [b.id for b in client.batches.list(limit=100)] == made[::-1]
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # auto-paging
    with pytest.raises(openai.BadRequestError, match="limit"):
        client.batches.list(limit=101)


def test_cancel_keeps_what_ran(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.configure(processing_seconds=100, cancelling_seconds=30)
    batch = start(client, [embedding_line(f"i{n}", f"t {n}") for n in range(10)])
    server.batches.advance(30)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    server.batches.advance(100)  # no more lines run while cancelling
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    output = read_lines(client, cancelled.output_file_id)
    assert len(output) == 3
    errors = read_lines(client, cancelled.error_file_id)
    assert {line["error"]["code"] for line in errors.values()} == {"batch_cancelled"}
    with pytest.raises(openai.BadRequestError, match="Cannot cancel"):
        client.batches.cancel(batch.id)


# ---------------------------------------------------------------------- faults


def test_scripted_batch_faults(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    lines = [embedding_line(f"i{n}", f"t {n}") for n in range(6)]
    server.batches.fail_next_batch("server_error", "boom")
    server.batches.expire_next_batch(after_lines=2)
    server.batches.cancel_next_batch(after_lines=4)
    failed, expired, cancelled, normal = (
        client.batches.retrieve(start(client, lines).id) for _ in range(4)
    )
    assert failed.status == "failed"
    assert failed.errors
    assert failed.errors.data
    assert (failed.errors.data[0].code, failed.errors.data[0].message) == ("server_error", "boom")
    assert expired.status == "expired"
    assert len(read_lines(client, expired.output_file_id)) == 2
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert len(read_lines(client, cancelled.output_file_id)) == 4
    assert normal.status == "completed"


def test_line_faults_fail_then_heal(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.fail_lines(["a"], 429, times=1)
    server.batches.fail_lines(["b"], 500, times=2)
    server.batches.corrupt_lines(["c"])
    lines = [embedding_line(cid, f"text {cid}") for cid in "abcd"]
    first = client.batches.retrieve(start(client, lines).id)
    errors = read_lines(client, first.error_file_id)
    assert {cid: e["response"]["status_code"] for cid, e in errors.items()} == {"a": 429, "b": 500}
    assert errors["a"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    output = read_lines(client, first.output_file_id)
    assert output["c"]["response"]["body"]["data"][0]["embedding"] == []
    second = client.batches.retrieve(start(client, lines).id)
    assert read_lines(client, second.error_file_id).keys() == {"b"}
    third = client.batches.retrieve(start(client, lines).id)
    assert third.error_file_id is None
    with pytest.raises(ValueError, match="status"):
        server.batches.fail_lines(["x"], 200)


def test_enqueued_token_limit(server: MockOpenAIServer, client: openai.OpenAI) -> None:
    server.batches.configure(processing_seconds=100, enqueued_token_limit=30)
    lines = [embedding_line(f"i{n}", "four words of text here") for n in range(4)]  # 20 tokens
    first = start(client, lines)
    second = client.batches.retrieve(start(client, lines).id)
    assert client.batches.retrieve(first.id).status == "in_progress"
    assert second.status == "failed"
    assert second.errors
    assert second.errors.data
    assert second.errors.data[0].code == "token_limit_exceeded"
    server.batches.advance(100)
    third = client.batches.retrieve(start(client, lines).id)
    assert third.status == "in_progress"
    assert server.batches.peak_in_progress == 1


def test_download_faults_and_server_faults_apply(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    server.batches.fault_downloads(Fault.status(503))
    done = client.batches.retrieve(start(client, [embedding_line("a", "x")]).id)
    with pytest.raises(openai.InternalServerError):
        client.files.content(done.output_file_id or "")
    assert read_lines(client, done.output_file_id).keys() == {"a"}
    server.script(Fault.status(500), path="/v1/files")
    with pytest.raises(openai.InternalServerError):
        client.files.create(file=("a.jsonl", b"{}"), purpose="batch")


def test_a_server_without_the_batch_api_answers_404(
    server: MockOpenAIServer, client: openai.OpenAI
) -> None:
    server.batches.available = False
    with pytest.raises(openai.NotFoundError):
        client.batches.list()
    with pytest.raises(openai.NotFoundError):
        client.files.create(file=("a.jsonl", b"{}"), purpose="batch")
    assert client.embeddings.create(model=EMBED, input="still here").data


def test_configure_refuses_nonsense(server: MockOpenAIServer) -> None:
    with pytest.raises(TypeError, match="unknown"):
        server.batches.configure(speed=2)
    with pytest.raises(ValueError, match="finite"):
        server.batches.configure(processing_seconds=-1)
    with pytest.raises(ValueError, match="int"):
        server.batches.configure(max_lines=0)
    with pytest.raises(ValueError, match="after_lines"):
        server.batches.expire_next_batch(after_lines=-1)


@pytest.mark.anyio
async def test_async_official_client_reads_the_emulation(server: MockOpenAIServer) -> None:
    official = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    try:
        uploaded = await official.files.create(
            file=("in.jsonl", jsonl([embedding_line("a", "hello")])), purpose="batch"
        )
        batch = await official.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        done = await official.batches.retrieve(batch.id)
        content = await official.files.content(done.output_file_id or "")
        line = json.loads(content.content)
        assert line["custom_id"] == "a"
        assert [b.id async for b in official.batches.list()] == [batch.id]
    finally:
        await official.close()
