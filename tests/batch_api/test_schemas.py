"""The Batch API emulation's answers checked against OpenAI's OpenAPI description.

Skipped, saying so, where the description is not found (see tests/testing/test_schemas.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer

Validate = Callable[[str, Any], None]


@pytest.fixture
def server() -> Iterator[MockOpenAIServer]:
    with MockOpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: MockOpenAIServer) -> Iterator[openai.OpenAI]:
    official = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    yield official
    official.close()


def without_nulls(document: dict[str, Any]) -> dict[str, Any]:
    # OpenAI sends the timestamps, file ids and errors a batch does not have yet as null (the
    # description's own example does), where the description types them without null.
    return {key: value for key, value in document.items() if value is not None}


def raw(call: Any) -> Any:
    return json.loads(call.text)


def test_files_and_batches_match_the_description(
    server: MockOpenAIServer, client: openai.OpenAI, validate: Validate
) -> None:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hello"},
    }
    uploaded = client.files.with_raw_response.create(
        file=("in.jsonl", json.dumps(line).encode()), purpose="batch"
    )
    validate("OpenAIFile", raw(uploaded))
    file_id = raw(uploaded)["id"]
    created = client.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
    )
    validate("Batch", without_nulls(raw(created)))
    batch_id = raw(created)["id"]
    done = raw(client.batches.with_raw_response.retrieve(batch_id))
    assert done["status"] == "completed"
    validate("Batch", without_nulls(done))
    validate("BatchRequestCounts", done["request_counts"])
    listed = raw(client.batches.with_raw_response.list())
    validate("ListBatchesResponse", {**listed, "data": [without_nulls(b) for b in listed["data"]]})
    validate("ListFilesResponse", raw(client.files.with_raw_response.list()))
    validate("DeleteFileResponse", raw(client.files.with_raw_response.delete(file_id)))

    server.batches.fail_next_batch("invalid_json_line", "bad line", line=1)
    again = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    failed = client.batches.create(
        input_file_id=again.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    failed_raw = raw(client.batches.with_raw_response.retrieve(failed.id))
    assert failed_raw["status"] == "failed"
    validate("Batch", without_nulls(failed_raw))
    validate("BatchError", {k: v for k, v in failed_raw["errors"]["data"][0].items()})
