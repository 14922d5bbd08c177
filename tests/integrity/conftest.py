"""Switches of the integrity tests (issue 12: every input ends as a correct result or an honest
failure).

Tests marked ``slow`` (full-size variants) run only with ``--run-slow`` or with
``RESILIENT_LLM_FULL=1`` in the environment, as in the reliability suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from resilient_llm.testing import MockOpenAIServer


@pytest.fixture
def recording() -> Iterator[MockOpenAIServer]:
    """A loopback server that keeps the input texts of every request."""
    with MockOpenAIServer(record_texts=True) as server:
        yield server
