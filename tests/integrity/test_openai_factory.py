"""Issue 12, row 9 (SPEC §5): an ``openai_factory`` must build its client on the ``http_client``
it is handed; one that does not is refused at first use with an error saying why (the
library's timeouts and deadlines could not hold on it).

Today such a factory is used as is: against a server that drips, a call with ``deadline=1.5``
is still running at 120 s.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import anyio
import openai
import pytest

from resilient_llm import AsyncResilientClient, ResilientClient
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from ._public import DIMS, FAST, KEY, same_vector

WHY = re.compile(r"http_client", re.IGNORECASE)
GIVE_UP = 8.0  # seconds the test waits before calling the deadline ignored


def test_a_sync_factory_that_ignores_its_http_client_is_refused(server: MockOpenAIServer) -> None:
    server.script(Fault.drip(0.5), path="/v1/embeddings")
    client = ResilientClient(
        openai_factory=lambda http_client: openai.OpenAI(base_url=server.base_url, api_key=KEY),
        deadline=1.5,
        retry=FAST,
    )
    outcome: list[Any] = []

    def use() -> None:
        try:
            outcome.append(client.embed("x", dimensions=DIMS))
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=use, daemon=True)
    worker.start()
    worker.join(GIVE_UP)
    elapsed = time.monotonic() - started
    try:
        assert not worker.is_alive(), f"still running after {GIVE_UP:.0f} s (deadline 1.5 s)"
        (error,) = outcome
        assert isinstance(error, Exception), f"the call returned {error!r}"
        assert WHY.search(str(error)), f"the error does not say why: {error!r}"
        assert server.stats.total_requests == 0, "refused at first use means nothing is sent"
        assert elapsed < 1.5
    finally:
        client.close()
        server.stop()  # ends a drip still in progress, so the worker thread ends too
        worker.join(10)


@pytest.mark.anyio
async def test_an_async_factory_that_ignores_its_http_client_is_refused(
    server: MockOpenAIServer, anyio_backend: str
) -> None:
    server.script(Fault.drip(0.5), path="/v1/embeddings")
    client = AsyncResilientClient(
        openai_factory=lambda http_client: openai.AsyncOpenAI(
            base_url=server.base_url, api_key=KEY
        ),
        deadline=1.5,
        retry=FAST,
    )
    async with client:
        started = time.monotonic()
        with anyio.move_on_after(GIVE_UP) as scope:
            try:
                value: Any = await client.embed("x", dimensions=DIMS)
            except Exception as exc:
                value = exc
        elapsed = time.monotonic() - started
    assert not scope.cancelled_caught, f"still running after {GIVE_UP:.0f} s (deadline 1.5 s)"
    assert isinstance(value, Exception), f"the call returned {value!r}"
    assert WHY.search(str(value)), f"the error does not say why: {value!r}"
    assert server.stats.total_requests == 0
    assert elapsed < 1.5


def test_a_factory_that_uses_its_http_client_still_works(server: MockOpenAIServer) -> None:
    """Guard: the check must not refuse a well-behaved factory (Azure and the like)."""
    with ResilientClient(
        openai_factory=lambda http_client: openai.OpenAI(
            base_url=server.base_url, api_key=KEY, http_client=http_client
        ),
        retry=FAST,
    ) as client:
        assert same_vector(client.embed("fine", dimensions=DIMS), embedding_vector("fine", DIMS))
