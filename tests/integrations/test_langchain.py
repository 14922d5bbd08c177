"""ResilientEmbeddings beyond LangChain's standard suites: order, failures, clients, secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from resilient_llm import (
    AsyncResilientClient,
    BatchFailed,
    ClientClosedError,
    ResilientClient,
    RetryPolicy,
)
from resilient_llm.integrations.langchain import ResilientEmbeddings
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from ..conftest import TEST_KEY

QUICK = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)
DIMS = 16
TEXTS = [f"chunk {i} of the handbook" for i in range(40)]


@pytest.fixture
def embeddings(server: MockOpenAIServer) -> Iterator[ResilientEmbeddings]:
    adapter = ResilientEmbeddings(
        api_key=TEST_KEY,
        base_url=server.base_url,
        dimensions=DIMS,
        batch_size=4,
        max_concurrency=4,
        retry=QUICK,
    )
    yield adapter
    adapter.close()


def expected(texts: list[str]) -> list[Any]:
    return [pytest.approx(embedding_vector(text, DIMS)) for text in texts]


def test_documents_keep_input_order_in_bounded_concurrent_requests() -> None:
    with MockOpenAIServer(latency=0.02) as server:
        adapter = ResilientEmbeddings(
            api_key=TEST_KEY,
            base_url=server.base_url,
            dimensions=DIMS,
            batch_size=4,
            max_concurrency=3,
        )
        assert adapter.embed_documents(TEXTS) == expected(TEXTS)
        adapter.close()
        assert server.stats.requests_by_path["/v1/embeddings"] == 10  # 40 texts, 4 per request
        assert 1 < server.stats.peak_in_flight <= 3


def test_query_is_one_vector(embeddings: ResilientEmbeddings) -> None:
    assert embeddings.embed_query("what is the refund policy?") == pytest.approx(
        embedding_vector("what is the refund policy?", DIMS)
    )


def test_transient_errors_are_retried_unseen(
    embeddings: ResilientEmbeddings, server: MockOpenAIServer
) -> None:
    server.script(Fault.status(500), Fault.status(429, retry_after=0), Fault.reset())
    assert embeddings.embed_documents(TEXTS[:8]) == expected(TEXTS[:8])
    assert server.stats.faults_injected == {"status_500": 1, "status_429": 1, "reset": 1}


def test_poisoned_document_raises_with_the_rest_embedded(
    embeddings: ResilientEmbeddings,
) -> None:
    texts = [*TEXTS[:6], "POISON in chunk", *TEXTS[6:12]]
    with pytest.raises(BatchFailed, match="1 of 13 items failed") as caught:
        embeddings.embed_documents(texts)
    result = caught.value.result
    [failure] = result.failures
    assert (failure.index, failure.status, failure.error_type) == (6, 400, "BadRequestError")
    assert [value for _, value in result.succeeded()] == expected(TEXTS[:12])


def test_blank_document_fails_without_a_request(
    embeddings: ResilientEmbeddings, server: MockOpenAIServer
) -> None:
    with pytest.raises(BatchFailed) as caught:
        embeddings.embed_documents(["   "])
    assert caught.value.result.failures[0].error_type == "InvalidInput"
    with pytest.raises(BatchFailed):
        embeddings.embed_query("")
    assert server.stats.total_requests == 0


def test_no_documents_no_request(embeddings: ResilientEmbeddings, server: MockOpenAIServer) -> None:
    assert embeddings.embed_documents([]) == []
    assert server.stats.total_requests == 0


@pytest.mark.anyio
async def test_async_documents_keep_order_and_raise(
    embeddings: ResilientEmbeddings, server: MockOpenAIServer
) -> None:
    assert await embeddings.aembed_documents(TEXTS) == expected(TEXTS)
    assert await embeddings.aembed_query("q") == pytest.approx(embedding_vector("q", DIMS))
    with pytest.raises(BatchFailed) as caught:
        await embeddings.aembed_documents(["fine", "POISON", "also fine"])
    assert [failure.index for failure in caught.value.result.failures] == [1]
    await embeddings.aclose()


@pytest.mark.anyio
async def test_async_methods_use_only_the_async_client(server: MockOpenAIServer) -> None:
    # No sync client exists here: a thread hop to the sync methods would fail loudly.
    async with AsyncResilientClient(
        api_key=TEST_KEY, base_url=server.base_url, retry=QUICK
    ) as client:
        adapter = ResilientEmbeddings(async_client=client, dimensions=DIMS)
        assert await adapter.aembed_documents(TEXTS[:3]) == expected(TEXTS[:3])
        with pytest.raises(RuntimeError, match="client=ResilientClient"):
            adapter.embed_documents(TEXTS[:3])
        await adapter.aclose()  # the caller's client stays open
        assert await client.embed("still open", dimensions=DIMS)


@pytest.mark.anyio
async def test_sync_only_adapter_refuses_async_calls(server: MockOpenAIServer) -> None:
    with ResilientClient(api_key=TEST_KEY, base_url=server.base_url) as client:
        adapter = ResilientEmbeddings(client=client, model="text-embedding-3-large")
        with pytest.raises(RuntimeError, match="async_client=AsyncResilientClient"):
            await adapter.aembed_query("q")
        adapter.embed_query("sync works")
        [request] = server.requests
        assert request.model == "text-embedding-3-large"


def test_given_client_is_used_and_left_open(server: MockOpenAIServer) -> None:
    with ResilientClient(
        api_key=TEST_KEY, base_url=server.base_url, embedding_model="text-embedding-3-large"
    ) as client:
        adapter = ResilientEmbeddings(client=client)
        assert adapter.embed_query("hello") == pytest.approx(embedding_vector("hello", 3072))
        adapter.close()
        assert client.embed("still open")
        assert server.requests[0].model == "text-embedding-3-large"


def test_built_clients_close(server: MockOpenAIServer) -> None:
    adapter = ResilientEmbeddings(api_key=TEST_KEY, base_url=server.base_url)
    adapter.embed_query("hello")
    adapter.close()
    with pytest.raises((ClientClosedError, BatchFailed), match="client is closed"):
        adapter.embed_query("hello")


@pytest.mark.parametrize("option", ["api_key", "base_url", "timeouts", "retry"])
def test_connection_options_next_to_a_client_are_refused(option: str) -> None:
    value = {"api_key": "sk-other", "base_url": "http://x/v1", "timeouts": 5, "retry": QUICK}
    with (
        ResilientClient(api_key=TEST_KEY) as client,
        pytest.raises(pydantic.ValidationError, match=f"{option}: these options apply only"),
    ):
        ResilientEmbeddings(client=client, **{option: value[option]})


def test_model_alias_and_defaults() -> None:
    assert ResilientEmbeddings(api_key=TEST_KEY, embedding_model="m").model == "m"
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        ResilientEmbeddings(api_key=TEST_KEY, dimensions=0)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        ResilientEmbeddings(api_key=TEST_KEY, chunk_size=100)


def test_missing_api_key_fails_at_construction() -> None:
    with pytest.raises(Exception, match="api_key client option must be set"):
        ResilientEmbeddings()


def test_api_key_never_shown() -> None:
    adapter = ResilientEmbeddings(api_key=TEST_KEY, default_headers={"X-Token": TEST_KEY})
    shown = [repr(adapter), str(adapter), str(adapter.model_dump()), adapter.model_dump_json()]
    with pytest.raises(pydantic.ValidationError) as caught:
        ResilientEmbeddings(api_key=TEST_KEY, dimensions="many")
    shown.append(str(caught.value))
    for text in shown:
        assert "SECRET" not in text
