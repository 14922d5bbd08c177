"""ResilientEmbedding inside LlamaIndex: a VectorStoreIndex built over the loopback server.

Nodes are given as ``TextNode``s, so no node parser (and no tokenizer download) runs, and no
LLM is needed: the index embeds, the retriever embeds the query. Nothing leaves loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

# The [llama-index] extra is large; should it leave the dev extra, these tests skip, saying so.
pytest.importorskip("llama_index.core", reason="needs the [llama-index] extra")

from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from resilient_llm import AsyncResilientClient, BatchFailed, ResilientClient, RetryPolicy
from resilient_llm.integrations.llama_index import ResilientEmbedding
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from ..conftest import TEST_KEY

DIMS = 12
TEXTS = [f"paragraph {i} about the warranty" for i in range(30)]


@pytest.fixture
def anyio_backend() -> str:
    # LlamaIndex's async batch API gathers with asyncio.gather: asyncio only.
    return "asyncio"


@pytest.fixture
def embed_model(server: MockOpenAIServer) -> Iterator[ResilientEmbedding]:
    adapter = ResilientEmbedding(
        api_key=TEST_KEY,
        base_url=server.base_url,
        dimensions=DIMS,
        batch_size=3,  # inputs per HTTP request
        embed_batch_size=8,  # texts LlamaIndex hands over per call
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05),
    )
    yield adapter
    adapter.close()


def nodes(texts: list[str]) -> list[TextNode]:
    return [TextNode(text=text, id_=f"node-{i}") for i, text in enumerate(texts)]


def stored(index: VectorStoreIndex, count: int) -> list[list[float]]:
    return [index.vector_store.get(f"node-{i}") for i in range(count)]


def expected(texts: list[str]) -> list[Any]:
    return [pytest.approx(embedding_vector(text, DIMS)) for text in texts]


def test_vector_store_index_embeds_in_order(
    embed_model: ResilientEmbedding, server: MockOpenAIServer
) -> None:
    server.script(Fault.status(503), Fault.status(429, retry_after=0))
    index = VectorStoreIndex(nodes(TEXTS), embed_model=embed_model)
    assert stored(index, len(TEXTS)) == expected(TEXTS)
    [top] = index.as_retriever(similarity_top_k=1).retrieve(TEXTS[17])
    assert top.node.node_id == "node-17"
    assert server.stats.faults_injected == {"status_503": 1, "status_429": 1}


def test_poisoned_node_fails_the_index(embed_model: ResilientEmbedding) -> None:
    texts = [*TEXTS[:10], "POISON paragraph", *TEXTS[10:]]
    with pytest.raises(BatchFailed, match="1 of 8 items failed") as caught:
        VectorStoreIndex(nodes(texts), embed_model=embed_model)
    # LlamaIndex hands over 8 texts per call: the failure is item 2 of its second call.
    [failure] = caught.value.result.failures
    assert (failure.index, failure.status) == (2, 400)


def test_text_embedding_batch_and_query(embed_model: ResilientEmbedding) -> None:
    assert embed_model.get_text_embedding_batch(TEXTS) == expected(TEXTS)
    assert embed_model.get_text_embedding(TEXTS[3]) == expected([TEXTS[3]])[0]
    assert embed_model.get_query_embedding("warranty?") == expected(["warranty?"])[0]
    with pytest.raises(BatchFailed):
        embed_model.get_text_embedding_batch(["ok", "POISON"])


@pytest.mark.anyio
async def test_async_index_and_batch(embed_model: ResilientEmbedding) -> None:
    index = VectorStoreIndex([], embed_model=embed_model)
    await index.ainsert_nodes(nodes(TEXTS))
    assert stored(index, len(TEXTS)) == expected(TEXTS)
    [top] = await index.as_retriever(similarity_top_k=1).aretrieve(TEXTS[5])
    assert top.node.node_id == "node-5"
    with pytest.raises(BatchFailed):
        await embed_model.aget_text_embedding_batch([*TEXTS[:4], "POISON"])
    assert await embed_model.aget_text_embedding("x") == expected(["x"])[0]
    await embed_model.aclose()


@pytest.mark.anyio
async def test_given_clients(server: MockOpenAIServer) -> None:
    with ResilientClient(api_key=TEST_KEY, base_url=server.base_url) as client:
        async with AsyncResilientClient(api_key=TEST_KEY, base_url=server.base_url) as aclient:
            adapter = ResilientEmbedding(client=client, async_client=aclient, dimensions=DIMS)
            assert adapter.model_name == "text-embedding-3-small"
            assert adapter.get_query_embedding("q") == expected(["q"])[0]
            assert await adapter.aget_query_embedding("q") == expected(["q"])[0]
            await adapter.aclose()  # the caller's clients stay open
            assert client.embed("still open")
            assert await aclient.embed("still open")


def test_options_and_secrets() -> None:
    adapter = ResilientEmbedding(api_key=TEST_KEY, model="text-embedding-3-large")
    assert adapter.model_name == "text-embedding-3-large"
    assert adapter.embed_batch_size == 2048
    for text in (repr(adapter), adapter.to_json(), str(adapter.to_payload())):
        assert "SECRET" not in text
    with pytest.raises(pydantic.ValidationError, match="pass one of model_name, model"):
        ResilientEmbedding(api_key=TEST_KEY, model="a", model_name="b")
    with ResilientClient(api_key=TEST_KEY) as client, pytest.raises(pydantic.ValidationError):
        ResilientEmbedding(client=client, base_url="http://elsewhere/v1")
