"""Shared fixtures: async tests run on asyncio and trio; clients point at the loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from resilient_llm.testing import MockOpenAIServer

FULL_ENV = "RESILIENT_LLM_FULL"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="run tests marked slow (full-size variants); or set RESILIENT_LLM_FULL=1",
    )


def full_run(config: pytest.Config) -> bool:
    """Whether slow tests run: ``--run-slow``, or ``RESILIENT_LLM_FULL=1`` in the environment."""
    return bool(config.getoption("--run-slow", default=False)) or os.environ.get(FULL_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_run(config):
        return
    skip = pytest.mark.skip(reason=f"slow: needs --run-slow or {FULL_ENV}=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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
