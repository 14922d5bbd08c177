"""Fixtures for the testing kit's own tests (the kit's public fixtures come from its plugin)."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The server runs its own loop in a thread, so clients on either backend must work."""
    return str(request.param)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Built once: every official client would otherwise spend ~45 ms loading CA certificates
    # it never uses against a plain-HTTP loopback server.
    return ssl.create_default_context()


@pytest.fixture
def make_client() -> Iterator[Callable[..., openai.OpenAI]]:
    """``make_client(server, **options)``: the raw official client without its own retries."""
    made: list[openai.OpenAI] = []

    def make(server: MockOpenAIServer, **options: Any) -> openai.OpenAI:
        options.setdefault("api_key", "sk-test")
        client = openai.OpenAI(
            base_url=server.base_url,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=_ssl_context()),
            **options,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_async_client() -> Callable[..., openai.AsyncOpenAI]:
    """``make_async_client(server)``: use it as ``async with`` inside the test's event loop."""

    def make(server: MockOpenAIServer, **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("api_key", "sk-test")
        return openai.AsyncOpenAI(
            base_url=server.base_url,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=_ssl_context()),
            **options,
        )

    return make


@pytest.fixture
def client(
    mock_openai: MockOpenAIServer, make_client: Callable[..., openai.OpenAI]
) -> openai.OpenAI:
    """The raw official client pointed at this test's server."""
    return make_client(mock_openai)
