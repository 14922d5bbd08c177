"""Pytest plugin of the testing kit, registered through the ``pytest11`` entry point.

Fixtures:
    mock_openai: a started `MockOpenAIServer`, new for each test (so faults, counters and the
        request log start empty). Options come from a ``mock_openai`` marker:
        ``@pytest.mark.mock_openai(latency=0.01, rpm=5)``.
    mock_openai_factory: ``factory(**options)`` starts more servers with any options; all of
        them stop when the test ends.

This module is imported in every pytest session of an environment where resilient_llm is
installed, so it imports nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from resilient_llm.testing._server import MockOpenAIServer

__all__ = ["mock_openai", "mock_openai_factory"]


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker, so that ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        "mock_openai(**options): options of the MockOpenAIServer behind the mock_openai fixture",
    )


@pytest.fixture
def mock_openai_factory() -> Iterator[Callable[..., MockOpenAIServer]]:
    """Start `MockOpenAIServer` instances with custom options; stopped after the test.

    Yields:
        ``factory(**options) -> MockOpenAIServer`` (already started).
    """
    from resilient_llm.testing._server import MockOpenAIServer

    servers: list[MockOpenAIServer] = []

    def factory(**options: Any) -> MockOpenAIServer:
        server = MockOpenAIServer(**options)
        server.start()
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
def mock_openai(
    request: pytest.FixtureRequest, mock_openai_factory: Callable[..., MockOpenAIServer]
) -> MockOpenAIServer:
    """A started loopback OpenAI server for this test only.

    Returns:
        The server; point clients at ``mock_openai.base_url``.
    """
    marker = request.node.get_closest_marker("mock_openai")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    return mock_openai_factory(**options)
