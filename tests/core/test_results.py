"""The public batch records: previews, failure records, stats (and merging), results."""

from __future__ import annotations

import openai
import pytest

from resilient_llm._batch.planning import Item
from resilient_llm._batch.results import BatchResult, BatchStats, ItemFailure, preview
from resilient_llm._exceptions import BatchFailed, ResilientLLMError
from tests.core._helpers import api_error, raised

# --- preview -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ("hello", "hello"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("x" * 80, "x" * 80),
        ("x" * 81, "x" * 80 + "… (81 chars)"),
        ("bad \ud800 surrogate", "bad \\ud800 surrogate"),
        ("中文 😀", "中文 😀"),
        (b"raw", "b'raw'"),
        (b"y" * 100, "b'" + "y" * 80 + "'… (100 bytes)"),
        (42, "42"),
        (None, "None"),
        (Item(3, "item text", 2), "item text"),
    ],
)
def test_preview(obj: object, expected: str) -> None:
    assert preview(obj) == expected


def test_preview_of_huge_inputs_is_short() -> None:
    assert len(preview("z" * 10_000_000)) < 120
    assert len(preview(list(range(1_000_000)))) <= 120
    assert len(preview({i: str(i) * 100 for i in range(1000)})) <= 120
    assert "\n" not in preview(["a\nb"] * 3)


def test_preview_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    text = preview(Broken())
    assert text.startswith("<Broken")
    assert len(text) <= 80


# --- ItemFailure ---------------------------------------------------------------------------------


def test_item_failure_from_openai_error() -> None:
    exc = raised(api_error(openai.BadRequestError, 400, "bad input", code="invalid_value"))
    failure = ItemFailure.from_exception(7, exc, attempts=2, item="some text " * 50)
    assert failure.index == 7
    assert failure.error_type == "BadRequestError"
    assert "bad input" in failure.message
    assert failure.status == 400
    assert failure.attempts == 2
    assert failure.traceback.startswith("Traceback (most recent call last)")
    assert "BadRequestError" in failure.traceback
    assert failure.preview.startswith("some text some text")
    assert len(failure.preview) < 120
    assert failure.as_dict()["index"] == 7
    assert failure.as_dict()["status"] == 400


_MISSING = object()


@pytest.mark.parametrize(
    ("status_code", "status"),
    [(_MISSING, None), (429, 429), (None, None), (True, None), ("500", None)],
)
def test_item_failure_status(status_code: object, status: int | None) -> None:
    exc = RuntimeError("boom")
    if status_code is not _MISSING:
        exc.status_code = status_code  # type: ignore[attr-defined]
    assert ItemFailure.from_exception(0, exc, attempts=1, item="t").status == status


def test_item_failure_of_an_error_never_raised_has_a_traceback_text() -> None:
    failure = ItemFailure.from_exception(0, KeyError("k"), attempts=0, item=None)
    assert "KeyError" in failure.traceback
    assert failure.preview == "None"


def test_item_failure_redacts_api_keys_and_clips() -> None:
    key = "sk-proj-ABCDEF0123456789abcdef"
    exc = raised(RuntimeError(f"auth failed for {key}; header Bearer {key[3:]} " + "m" * 5000))
    failure = ItemFailure.from_exception(0, exc, attempts=1, item="t")
    assert key not in failure.message
    assert key[3:] not in failure.message
    assert key not in failure.traceback
    assert "sk-***" in failure.message
    assert len(failure.message) < 2_100


def test_item_failure_repr_omits_the_traceback() -> None:
    failure = ItemFailure.from_exception(0, raised(ValueError("v")), attempts=1, item="t")
    assert "Traceback" not in repr(failure)


# --- BatchStats / BatchResult --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("succeeded", "elapsed", "throughput"),
    [(10, 2.0, 5.0), (0, 1.0, 0.0), (10, 0.0, 0.0), (3, 0.5, 6.0)],
)
def test_throughput(succeeded: int, elapsed: float, throughput: float) -> None:
    assert BatchStats(succeeded=succeeded, elapsed=elapsed).throughput == throughput


def _failure(index: int, message: str = "bad") -> ItemFailure:
    return ItemFailure(index, "BadRequestError", message, 400, 1, "tb", f"input {index}")


def test_result_ok_and_raise_for_failures() -> None:
    good: BatchResult[str] = BatchResult(["a", "b"], [], BatchStats(total=2, succeeded=2))
    assert good.ok
    assert good.raise_for_failures() is good
    bad: BatchResult[str] = BatchResult(
        ["a", None], [_failure(1)], BatchStats(total=2, succeeded=1, failed=1)
    )
    assert not bad.ok
    with pytest.raises(BatchFailed) as info:
        bad.raise_for_failures()
    assert info.value.result is bad
    assert isinstance(info.value, ResilientLLMError)
    assert "1 of 2 items failed" in str(info.value)
    assert "item 1" in str(info.value)


def test_succeeded_uses_failures_not_none() -> None:
    # A map() function may return None as a real value.
    result: BatchResult[int | None] = BatchResult(
        [None, 2, None, 4], [_failure(2)], BatchStats(total=4, succeeded=3, failed=1)
    )
    assert list(result.succeeded()) == [(0, None), (1, 2), (3, 4)]


def test_len_is_the_number_of_inputs_even_without_values() -> None:
    result: BatchResult[str] = BatchResult([], [_failure(5)], BatchStats(total=9, failed=1))
    assert len(result) == 9
    assert list(result.succeeded()) == []


def test_repr_and_summary_never_dump_values() -> None:
    n = 100_000
    failures = [_failure(i, "x" * 500) for i in range(0, 40, 4)]
    result: BatchResult[str] = BatchResult(
        ["value-" * 10] * n,
        failures,
        BatchStats(total=n, succeeded=n - 10, failed=10, requests=50, retries=3, elapsed=2.0),
    )
    text = repr(result)
    assert len(text) < 400
    assert "total=100000" in text
    assert "failed=10" in text
    summary = result.summary()
    assert len(summary) < 3000
    assert "99990 succeeded, 10 failed" in summary
    assert "item 0: BadRequestError (HTTP 400)" in summary
    assert "… and 5 more failures" in summary
    assert "value-" not in summary
