"""Switches of the integrity tests (issue 12: every input ends as a correct result or an honest
failure).

Tests marked ``slow`` (full-size variants) run only with ``--run-slow`` or with
``RESILIENT_LLM_FULL=1`` in the environment, as in the reliability suite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from resilient_llm.testing import MockOpenAIServer

FULL_ENV = "RESILIENT_LLM_FULL"


def pytest_addoption(parser: pytest.Parser) -> None:
    # tests/reliability declares the same switch; whichever conftest loads second keeps it.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--run-slow",
            action="store_true",
            default=False,
            help="run tests marked slow; or set RESILIENT_LLM_FULL=1",
        )


def _full(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow", default=False)) or os.environ.get(FULL_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _full(config):
        return
    skip = pytest.mark.skip(reason=f"slow: needs --run-slow or {FULL_ENV}=1")
    here = os.path.dirname(__file__)
    for item in items:
        if "slow" in item.keywords and str(item.path).startswith(here):
            item.add_marker(skip)


@pytest.fixture
def recording() -> Iterator[MockOpenAIServer]:
    """A loopback server that keeps the input texts of every request."""
    with MockOpenAIServer(record_texts=True) as server:
        yield server
