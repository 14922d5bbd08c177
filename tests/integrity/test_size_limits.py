"""Issue 12, row 4 (SPEC §6 size limits): a request refused for its size is re-sent split, and
the smaller size is kept for the rest of the job.

The server is text-embeddings-inference's ``/v1/embeddings`` with ``--max-client-batch-size 32``
(`TeiServer`): more inputs get 413 (TEI) or 422 (older TEI, proxies) with TEI's message
``batch size N > maximum allowed batch size 32``; the testing kit's own size limits (TEI's and
Azure OpenAI's words) run the same job.

Today: the 422 is split once into 100 + 100, then all 200 fail; the 413 is not split at all.
"""

from __future__ import annotations

import math

import pytest

from resilient_llm import BatchResult
from resilient_llm.testing import MockOpenAIServer

from ._public import DIMS, assert_outcomes, async_client, stat, sync_client, vector_of
from ._servers import TeiServer

LIMIT = 32
STATUSES = [pytest.param(413, id="413"), pytest.param(422, id="422")]


def refused_bound(batch_size: int, limit: int, concurrency: int) -> int:
    """Refusals a job may meet before it sends only sizes the server takes.

    Halving from `batch_size` reaches `limit` after ceil(log2(batch_size / limit)) refusals in a
    row; at each of those sizes at most `concurrency` requests can be in flight when the first
    refusal comes back. A job that parses the limit from the message needs fewer.
    """
    return concurrency * math.ceil(math.log2(batch_size / limit))


def check_adapted(
    result: BatchResult[list[float]], texts: list[str], server: TeiServer, concurrency: int
) -> None:
    assert_outcomes(result, texts, failed=(), value_of=vector_of(texts))
    sizes = server.sizes()
    refused = [n for n, status in sizes if status != 200]
    accepted = [n for n, status in sizes if status == 200]
    assert sum(accepted) == len(texts), "every text is embedded exactly once"
    bound = refused_bound(200, LIMIT, concurrency)
    assert len(refused) <= bound, f"{len(refused)} refused requests (bound {bound}): {sizes}"
    size_limit = stat(result, "size_limit")
    assert size_limit is not None, "stats.size_limit: the server's limit was not reported"
    assert 1 <= size_limit <= LIMIT, size_limit
    assert max(accepted) <= LIMIT


@pytest.mark.parametrize("status", STATUSES)
def test_two_hundred_in_one_request_to_a_server_that_takes_32_sync(status: int) -> None:
    texts = [f"tei text {i}" for i in range(200)]
    with TeiServer(LIMIT, status, DIMS) as server, sync_client(server.base_url) as client:
        result = client.embed_batch(texts, batch_size=200, max_concurrency=1, dimensions=DIMS)
        check_adapted(result, texts, server, concurrency=1)


@pytest.mark.anyio
@pytest.mark.parametrize("status", STATUSES)
async def test_two_hundred_in_one_request_to_a_server_that_takes_32_async(
    status: int, anyio_backend: str
) -> None:
    texts = [f"tei text {i}" for i in range(200)]
    with TeiServer(LIMIT, status, DIMS) as server:
        async with async_client(server.base_url) as client:
            result = await client.embed_batch(
                texts, batch_size=200, max_concurrency=1, dimensions=DIMS
            )
        check_adapted(result, texts, server, concurrency=1)


@pytest.mark.parametrize("status", STATUSES)
def test_the_smaller_size_is_kept_for_the_rest_of_the_job(status: int) -> None:
    """2,000 texts in requests of 200, two in flight: once the limit is found, later requests
    are sent at a size the server takes. Learning it per request instead would meet at least
    3 refusals for each of the 10 requests."""
    texts = [f"tei job {i}" for i in range(2_000)]
    with TeiServer(LIMIT, status, DIMS) as server, sync_client(server.base_url) as client:
        result = client.embed_batch(texts, batch_size=200, max_concurrency=2, dimensions=DIMS)
        check_adapted(result, texts, server, concurrency=2)


KIT_STYLES = [pytest.param("tei", id="tei-413"), pytest.param("azure", id="azure-400")]


@pytest.mark.parametrize("style", KIT_STYLES)
def test_the_kits_size_limited_servers(style: str) -> None:
    """The same job against the testing kit's size limits, refused in TEI's words (413) or
    Azure OpenAI's ("Too many inputs. The max number of inputs is 32", 400); the server's own
    log says what it refused."""
    texts = [f"kit text {i}" for i in range(1_000)]
    with (
        MockOpenAIServer(max_inputs_per_request=LIMIT, size_limit_style=style) as server,
        sync_client(server.base_url) as client,
    ):
        result = client.embed_batch(texts, batch_size=200, max_concurrency=2, dimensions=DIMS)
        records = server.requests
    assert_outcomes(result, texts, failed=(), value_of=vector_of(texts))
    refused = [r for r in records if r.status != 200]
    assert all(r.n_inputs > LIMIT for r in refused), [(r.n_inputs, r.status) for r in refused]
    assert sum(r.n_inputs for r in records if r.status == 200) == len(texts)
    assert len(refused) <= refused_bound(200, LIMIT, 2), len(refused)
    size_limit = stat(result, "size_limit")
    assert size_limit is not None, "stats.size_limit: the server's limit was not reported"
    assert 1 <= size_limit <= LIMIT, size_limit
