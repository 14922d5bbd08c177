"""The reliability suite's switches and guards.

- ``slow`` tests (full-size soak and outage, the longest fault rows) run only with
  ``--run-slow`` (accepted when this directory is on the command line, as in
  ``pytest tests/reliability --run-slow``) or with ``RESILIENT_LLM_FULL=1`` in the environment
  (works from any directory, e.g. ``RESILIENT_LLM_FULL=1 pytest``).
  ``python -m tests.reliability --full`` sets both and writes RELIABILITY.md.
- Every test of the suite runs under a leak guard: threads and sockets are counted before the
  test and must be back to that baseline after it (clients closed, servers stopped), within a
  short settle time. Async tests also compare task counts themselves (see ``_support``).
- Tests hand figures to the report through the ``figures`` fixture (pytest's
  ``record_property``), which ``python -m tests.reliability`` collects.
- The ``server`` fixture records input texts, so that accounting checks compare a batch's
  results with what the server itself answered (``_support.assert_accounted_once``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilient_llm.testing import MockOpenAIServer

from ..conftest import full_run
from ._support import HAS_PROC, resources, settle_resources


@pytest.fixture
def server() -> Iterator[MockOpenAIServer]:
    """The loopback server, keeping every input text: checks compare results with its log."""
    with MockOpenAIServer(record_texts=True) as running:
        yield running


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    """Whether this is the full run (sizes of the soak and the outage depend on it)."""
    return full_run(request.config)


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[..., None]:
    """``figures(section=..., **data)``: a record for RELIABILITY.md."""

    def record(**data: Any) -> None:
        record_property("figures", data)

    return record


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        # An expected failure (xfail) may leave a client half-open too.
        item.stash[CALL_FAILED] = report.failed or hasattr(report, "wasxfail")
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def leak_guard(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Iterator[None]:
    """Threads and sockets after the test (clients closed, servers stopped) == before."""
    before = resources()
    yield
    after = settle_resources(before)
    record_property(
        "figures",
        {
            "section": "leaks",
            "threads_before": before.threads,
            "threads_after": after.threads,
            "sockets_before": before.sockets,
            "sockets_after": after.sockets,
            "runtime_threads_after": after.runtime_threads,
            "sockets_counted": HAS_PROC,
        },
    )
    if request.node.stash.get(CALL_FAILED, False):
        return  # the test's own failure says more; a client it left open is no news
    assert not after.exceeds(before), (
        f"leaked: before {before.describe()}, after close {after.describe()}"
    )
