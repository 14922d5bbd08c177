"""Shared fixtures: async tests run on asyncio and trio; clients point at the loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from resilient_llm.testing import MockOpenAIServer

# Tests never reach a real API; make sure no key from the environment leaks into them.
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)

TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[MockOpenAIServer]:
    with MockOpenAIServer() as running:
        yield running
