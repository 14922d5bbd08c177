"""Issue 12, row 2 (SPEC §6 answer checks): a bad embeddings answer never becomes data.

An answer must hold exactly one vector per input, every ``index`` in range and unique, every
vector non-empty, finite and of the requested length. One that fails a check is
`InvalidResponse`, retried like a 5xx: the call succeeds on a retry with the right vectors, or
fails with `InvalidResponse` once its attempts run out.

Today: the extra entry overwrites the last input's vector, duplicates overwrite silently, ``[]``
and short vectors are returned as data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resilient_llm import BatchResult
from resilient_llm.testing import MockOpenAIServer, embedding_vector

from ._public import (
    DIMS,
    FAST,
    InvalidResponse,
    answered_texts,
    assert_outcomes,
    async_client,
    same_vector,
    sync_client,
    vector_of,
)
from ._servers import bad_embedding_answers

TEXTS3 = ["first input", "second input", "third input"]
KINDS = sorted(bad_embedding_answers(3, DIMS))
ATTEMPTS = FAST.max_attempts


def _assert_vectors(got: Any, texts: list[str]) -> None:
    assert isinstance(got, list), got
    assert len(got) == len(texts), got
    for vector, text in zip(got, texts, strict=True):
        assert same_vector(vector, embedding_vector(text, DIMS)), f"wrong vector for {text!r}"


# -- single calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_answer_is_retried_sync(kind: str, server: MockOpenAIServer) -> None:
    server.script(bad_embedding_answers(3, DIMS)[kind], path="/v1/embeddings")
    with sync_client(server.base_url) as client:
        got = client.embed(TEXTS3, dimensions=DIMS)
    _assert_vectors(got, TEXTS3)
    assert server.stats.total_requests == 2, "the bad answer was not retried"


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_answer_to_one_text_is_retried_sync(kind: str, server: MockOpenAIServer) -> None:
    server.script(bad_embedding_answers(1, DIMS)[kind], path="/v1/embeddings")
    with sync_client(server.base_url) as client:
        got = client.embed("only input", dimensions=DIMS)
    assert same_vector(got, embedding_vector("only input", DIMS)), got
    assert server.stats.total_requests == 2


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_bad_answer_is_retried_async(
    kind: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    server.script(bad_embedding_answers(3, DIMS)[kind], path="/v1/embeddings")
    async with async_client(server.base_url) as client:
        got = await client.embed(TEXTS3, dimensions=DIMS)
    _assert_vectors(got, TEXTS3)
    assert server.stats.total_requests == 2


@pytest.mark.parametrize("kind", KINDS)
def test_bad_answers_to_every_attempt_raise_invalid_response_sync(kind: str) -> None:
    bad = bad_embedding_answers(3, DIMS)[kind]
    with MockOpenAIServer(fail_rate=1.0, random_faults=[bad]) as server:
        with sync_client(server.base_url) as client, pytest.raises(InvalidResponse):
            client.embed(TEXTS3, dimensions=DIMS)
        assert server.stats.total_requests == ATTEMPTS, "retried like a 5xx, to the last attempt"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_bad_answers_to_every_attempt_raise_invalid_response_async(
    kind: str, anyio_backend: str
) -> None:
    bad = bad_embedding_answers(3, DIMS)[kind]
    with MockOpenAIServer(fail_rate=1.0, random_faults=[bad]) as server:
        async with async_client(server.base_url) as client:
            with pytest.raises(InvalidResponse):
                await client.embed(TEXTS3, dimensions=DIMS)
        assert server.stats.total_requests == ATTEMPTS


# -- batches: a mixed run where a quarter of the answers are bad ------------------------------

MIXED_TOTAL = 600
MIXED_BATCH = 4


def _mixed_server(n: int) -> MockOpenAIServer:
    faults = list(bad_embedding_answers(n, DIMS).values())
    return MockOpenAIServer(fail_rate=0.25, random_faults=faults, seed=12, record_texts=True)


def check_mixed(result: BatchResult[list[float]], texts: list[str], server: Any) -> None:
    """Every value is the server's own vector for its text; every failure says why."""
    ok, _ = assert_outcomes(result, texts, value_of=vector_of(texts))
    for failure in result.failures:
        assert failure.error_type == "InvalidResponse", failure
        assert failure.attempts == ATTEMPTS, failure
    # A value may only come from an answer the server computed, never from a canned one.
    answered = answered_texts(server)
    assert {texts[i] for i in ok} <= answered
    injected = sum(server.stats.faults_injected.values())
    assert injected > len(texts) // MIXED_BATCH // 8, "the bad answers were not injected"


def test_mixed_bad_answers_in_embed_batch_sync() -> None:
    texts = [f"mixed text {i}" for i in range(MIXED_TOTAL)]
    with _mixed_server(MIXED_BATCH) as server:
        with sync_client(server.base_url) as client:
            result = client.embed_batch(
                texts, batch_size=MIXED_BATCH, max_concurrency=4, dimensions=DIMS
            )
        check_mixed(result, texts, server)


@pytest.mark.anyio
async def test_mixed_bad_answers_in_embed_batch_async(anyio_backend: str) -> None:
    texts = [f"mixed text {i}" for i in range(MIXED_TOTAL)]
    with _mixed_server(MIXED_BATCH) as server:
        async with async_client(server.base_url) as client:
            result = await client.embed_batch(
                texts, batch_size=MIXED_BATCH, max_concurrency=4, dimensions=DIMS
            )
        check_mixed(result, texts, server)


MAP_TOTAL = 300


def test_mixed_bad_answers_through_map_embed_sync() -> None:
    texts = [f"mapped text {i}" for i in range(MAP_TOTAL)]
    with _mixed_server(1) as server:
        with sync_client(server.base_url) as client:

            def embed(text: str) -> list[float]:
                return client.embed(text, dimensions=DIMS)

            result = client.map(embed, texts, max_concurrency=4)
        check_mixed(result, texts, server)


@pytest.mark.anyio
async def test_mixed_bad_answers_through_map_embed_async(anyio_backend: str) -> None:
    texts = [f"mapped text {i}" for i in range(MAP_TOTAL)]
    with _mixed_server(1) as server:
        async with async_client(server.base_url) as client:

            async def embed(text: str) -> list[float]:
                return await client.embed(text, dimensions=DIMS)

            result = await client.map(embed, texts, max_concurrency=4)
        check_mixed(result, texts, server)


BATCH_RUNNERS: dict[str, Callable[[Any, list[str]], Any]] = {
    "embed_batch": lambda c, t: c.embed_batch(t, batch_size=4, dimensions=DIMS),
    "map(embed)": lambda c, t: c.map(lambda x: c.embed([x], dimensions=DIMS)[0], t),
}


@pytest.mark.parametrize("form", sorted(BATCH_RUNNERS))
@pytest.mark.parametrize("kind", ["extra_index_minus_1", "duplicated_index", "empty_embedding"])
def test_a_batch_whose_answers_are_all_bad_fails_every_item(form: str, kind: str) -> None:
    """Nothing to salvage: every item fails with InvalidResponse after its attempts."""
    texts = [f"doomed {i}" for i in range(8)]
    n = 4 if form == "embed_batch" else 1
    bad = bad_embedding_answers(n, DIMS)[kind]
    with MockOpenAIServer(fail_rate=1.0, random_faults=[bad]) as server:
        with sync_client(server.base_url) as client:
            result = BATCH_RUNNERS[form](client, texts)
        requests = server.stats.total_requests
    assert_outcomes(result, texts, failed=range(8))
    assert {f.error_type for f in result.failures} == {"InvalidResponse"}
    assert requests == (8 // n) * ATTEMPTS
