"""The suite's own checks can fail: `assert_accounted_once` against results that lie, and the
report against runs that lost items.

A check that cannot fail proves nothing (issue 12: "the reliability suite must be able to
fail"). Results here are built by hand, so each lie is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from resilient_llm import BatchResult, BatchStats, ItemFailure
from resilient_llm.testing import RequestRecord, embedding_vector

from . import _report
from ._support import assert_accounted_once

TEXTS = ["alpha", "beta", "gamma", "delta"]
DIMS = 4


def _record(texts: tuple[str, ...], status: int | None = 200, fault: str | None = None) -> Any:
    return RequestRecord(
        path="/v1/embeddings",
        method="POST",
        status=status,
        n_inputs=len(texts),
        body_bytes=0,
        model="text-embedding-3-small",
        texts=texts,
        started=0.0,
        duration=0.0,
        fault=fault,
    )


@dataclass
class Log:
    """Stands in for a server: only its request log is read."""

    requests: list[Any] = field(default_factory=list)


def _failure(index: int, attempts: int = 1, error: str = "BadRequestError") -> ItemFailure:
    return ItemFailure(index, error, "bad", 400, attempts, "", TEXTS[index])


def _result(values: list[Any], failures: list[ItemFailure]) -> BatchResult[Any]:
    failed = len({f.index for f in failures})
    stats = BatchStats(total=len(values), succeeded=len(values) - failed, failed=failed)
    return BatchResult(values, failures, stats)


def _vector(index: int) -> list[float]:
    return embedding_vector(TEXTS[index], DIMS)


def _honest() -> tuple[BatchResult[Any], Log]:
    values: list[Any] = [_vector(0), _vector(1), None, _vector(3)]
    log = Log([_record(("alpha", "beta")), _record(("gamma",), 400), _record(("delta",))])
    return _result(values, [_failure(2)]), log


def test_an_honest_result_passes() -> None:
    result, log = _honest()
    assert_accounted_once(result, TEXTS, value_of=_vector, server=log)  # type: ignore[arg-type]


LIES = {
    "a value for a text the server never answered": lambda r, log: (
        r,
        Log([rec for rec in log.requests if rec.texts != ("delta",)]),
    ),
    "a value from a canned answer, not the server's": lambda r, log: (
        r,
        Log([*log.requests[:2], _record(("delta",), 200, "malformed_json")]),
    ),
    "a wrong vector": lambda r, log: (
        _result([_vector(1), _vector(1), None, _vector(3)], r.failures),
        log,
    ),
    "an index with neither a value nor a failure": lambda r, log: (
        _result([_vector(0), None, None, _vector(3)], r.failures),
        log,
    ),
    "an index that failed twice": lambda r, log: (
        _result(r.values, [_failure(2), _failure(2)]),
        log,
    ),
    "an index that failed and has a value": lambda r, log: (
        _result([*r.values[:2], _vector(2), r.values[3]], r.failures),
        log,
    ),
    "a failure 'never sent' that the server saw": lambda r, log: (
        _result(r.values, [_failure(2, attempts=0)]),
        log,
    ),
    "counters that disagree with the outcomes": lambda r, log: (
        BatchResult(r.values, r.failures, BatchStats(total=4, succeeded=4, failed=0)),
        log,
    ),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_each_lie_is_caught(lie: str) -> None:
    result, log = LIES[lie](*_honest())
    with pytest.raises(AssertionError):
        assert_accounted_once(result, TEXTS, value_of=_vector, server=log)


# -- the report ----------------------------------------------------------------------------------

META = {
    "command": "test",
    "date": "today",
    "wall": 1.0,
    "cpus": 2,
    "openai": "x",
    "http": "httpx2",
    "version": "0",
    "counts": "",
}


def _soak(outcome: str, *, succeeded: int, lost: int, wrong: int) -> _report.TestRecord:
    figure = {
        "section": "soak",
        "runner": "sync",
        "size": "reduced",
        "items": 1000,
        "succeeded": succeeded,
        "wrong": wrong,
        "failed": 1000 - succeeded - lost - wrong,
        "failures_by_type": {},
        "lost": lost,
        "duplicates": 0,
        "success_rate": succeeded / 1000,
        "retries": 0,
        "server_requests": 1000,
        "faults_injected": {},
        "peak_in_flight": 4,
        "max_attempts": 5,
        "elapsed": 1.0,
        "threads": (1, 2, 1),
        "sockets": (0, 1, 0),
        "tasks": None,
    }
    return _report.TestRecord(
        f"tests/reliability/test_soak.py::{outcome}", outcome, figures=[figure]
    )


def test_a_clean_soak_reads_met() -> None:
    text = _report.render({"a": _soak("passed", succeeded=1000, lost=0, wrong=0)}, META)
    assert re.search(r"\*\*Load\*\* \(met", text)
    assert "Items lost: 0; wrong values: 0** (met" in text


def test_a_failing_soak_shows_its_losses_and_reads_missed() -> None:
    text = _report.render({"a": _soak("failed", succeeded=990, lost=7, wrong=3)}, META)
    assert "**Load** (**missed**" in text
    assert "Items lost: 7; wrong values: 3** (**missed**" in text
    row = next(line for line in text.splitlines() if line.startswith("| sync | 1,000"))
    assert "**missed**" in row
    assert "| failed |" in row


def test_a_leaking_secrets_case_reads_missed() -> None:
    leaky = _report.TestRecord(
        "tests/reliability/test_secrets.py::x",
        "failed",
        figures=[{"section": "secrets", "case": "x", "searched": 10, "leaks": 1}],
    )
    assert "**Secrets** (**missed**)" in _report.render({"s": leaky}, META)
