# CJK punctuation in sentence-splitting cases is the point.
# ruff: noqa: RUF001
"""The I/O-free batch core: previews, failure records, accounting, input checks, planning,
bisection and chunking."""

from __future__ import annotations

import gc
import logging
import random
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import _tokens
from resilient_llm._batch import (
    BatchAccountant,
    BatchResult,
    BatchStats,
    BisectionOutcome,
    Item,
    ItemFailure,
    PlannedRequest,
    RequestPlanner,
    bisect_outcome,
    bisection_request_bound,
    both_alike,
    error_signature,
    is_input_rejection,
    prepare_item,
    preview,
    text_chunks,
    validate_batch_size,
    validate_too_long,
)
from resilient_llm._exceptions import BatchFailed, InvalidInput, ResilientLLMError
from resilient_llm._tokens import EstimatingCounter, TiktokenCounter, TokenCounter
from tests.conftest_tokens import build_tiktoken_cache
from tests.sdk_objects import status_error, timeout_error

# --- helpers -------------------------------------------------------------------------------------


class WordCounter:
    """One token per whitespace-separated word: counts a reader can check by eye."""

    name = "words"
    exact = True

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        words = text.split()
        if len(words) <= max_tokens:
            return text
        return " ".join(words[:max_tokens])


class CharCounter:
    """One token per non-whitespace character (so any word can be over a limit)."""

    name = "chars"
    exact = True

    def count(self, text: str) -> int:
        return sum(1 for char in text if not char.isspace())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        seen = 0
        for position, char in enumerate(text):
            if not char.isspace():
                seen += 1
                if seen > max_tokens:
                    return text[:position]
        return text


WORDS = WordCounter()


def api_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = "invalid_request_error",
    request_id: str = "req_abc",
) -> openai.APIStatusError:
    """A real openai status error around a real HTTP response (see tests/sdk_objects.py)."""
    body = {"message": message, "code": code, "param": param, "type": type_}
    return status_error(status, body={"error": body}, headers={"x-request-id": request_id}, cls=cls)


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a caught exception has."""
    try:
        raise exc
    except BaseException as caught:
        return caught


class Obj:
    """A stand-in error that is not an openai exception."""

    def __init__(self, status_code: object = None, message: str = "m", **attrs: object) -> None:
        self.status_code = status_code
        self.message = message
        for key, value in attrs.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


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


# --- BatchAccountant -----------------------------------------------------------------------------

Op = tuple[Any, ...]


@pytest.mark.parametrize(
    ("ops", "error_at"),
    [
        pytest.param([("s", 0), ("s", 1), ("f", 2)], None, id="all-once"),
        pytest.param([("f", 2), ("s", 0), ("s", 1)], None, id="out-of-order"),
        pytest.param([("s", 0), ("s", 0)], 1, id="success-twice"),
        pytest.param([("f", 1), ("s", 1)], 1, id="failure-then-success"),
        pytest.param([("s", 1), ("f", 1)], 1, id="success-then-failure"),
        pytest.param([("f", 0), ("f", 0)], 1, id="failure-twice"),
        pytest.param([("s", 2), ("s", 1), ("s", 0), ("s", 2)], 3, id="twice-after-compaction"),
        pytest.param([("s", 3)], 0, id="never-expected"),
        pytest.param([("s", -1)], 0, id="negative"),
        pytest.param([("s", True)], 0, id="bool-index"),
    ],
)
def test_every_index_recorded_once(ops: list[Op], error_at: int | None) -> None:
    acct: BatchAccountant[str] = BatchAccountant()
    acct.expect(3)
    for step, (kind, index) in enumerate(ops):
        if step == error_at:
            with pytest.raises(RuntimeError, match="batch accounting"):
                record(acct, kind, index)
            return
        record(acct, kind, index)
    assert error_at is None


def record(acct: BatchAccountant[str], kind: str, index: Any) -> int:
    if kind == "s":
        return acct.success(index, f"v{index}")
    return acct.failure(index, ValueError(f"e{index}"), attempts=1, item=f"in{index}")


@pytest.mark.parametrize(
    ("recorded", "missing"),
    [([], [0, 1, 2, 3]), ([0, 2], [1, 3]), ([1, 2, 3], [0]), ([0, 1, 2], [3])],
)
def test_result_refuses_unaccounted_indices(recorded: list[int], missing: list[int]) -> None:
    acct: BatchAccountant[str] = BatchAccountant()
    acct.expect(4)
    for index in recorded:
        acct.success(index, "v")
    assert acct.missing() == missing
    with pytest.raises(RuntimeError, match=rf"first: \[{missing[0]}"):
        acct.result(1.0)


def test_result_is_in_input_order_with_sorted_failures() -> None:
    acct: BatchAccountant[str] = BatchAccountant()
    assert acct.expect(2) == 0
    assert acct.expect() == 2
    assert acct.expect(3) == 3
    assert acct.total == 6
    order = [5, 3, 0, 4, 1, 2]
    for done, index in enumerate(order, start=1):
        if index in (4, 1):
            record = acct.failure(index, ValueError("no"), attempts=3, item=f"t{index}")
            assert (record.index, record.attempts, acct.done) == (index, 3, done)
        else:
            assert acct.success(index, f"v{index}") == done
    assert acct.done == 6
    acct.count_request(3)
    acct.count_request()
    acct.count_retry(rate_limited=True)
    acct.count_retry(timeout=True)
    acct.count_retry()
    acct.count_bisection()
    acct.add_usage(10, 12)
    acct.add_usage(None, None)
    acct.add_usage(5, 5)
    result = acct.result(2.5)
    assert result.values == ["v0", None, "v2", "v3", None, "v5"]
    assert [f.index for f in result.failures] == [1, 4]
    assert result.failures[0].attempts == 3
    assert result.failures[0].preview == "t1"
    assert result.stats == BatchStats(
        total=6,
        succeeded=4,
        failed=2,
        requests=4,
        retries=3,
        rate_limited=1,
        timeouts=1,
        bisections=1,
        prompt_tokens=15,
        total_tokens=17,
        elapsed=2.5,
    )


def test_empty_batch() -> None:
    result = BatchAccountant[str]().result(0.0)
    assert result.values == []
    assert result.ok
    assert result.stats.total == 0


@pytest.mark.parametrize("n", [-1, 1.5, True, "3"])
def test_expect_rejects_bad_counts(n: Any) -> None:
    with pytest.raises(ValueError, match="expect"):
        BatchAccountant[str]().expect(n)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_accounting_property(data: st.DataObject) -> None:
    """Any order of recording, any outcome: exact values, failures and counts."""
    n = data.draw(st.integers(0, 60))
    keep = data.draw(st.booleans())
    order = data.draw(st.permutations(range(n)))
    fails = data.draw(st.sets(st.integers(0, max(0, n - 1)), max_size=n)) if n else set()
    acct: BatchAccountant[int] = BatchAccountant(keep_values=keep)
    acct.expect(n)
    for index in order:
        if index in fails:
            acct.failure(index, ValueError(str(index)), attempts=1, item=index)
        else:
            acct.success(index, index * 10)
    result = acct.result(1.0)
    assert result.stats.total == n
    assert result.stats.failed == len(fails)
    assert result.stats.succeeded == n - len(fails)
    assert [f.index for f in result.failures] == sorted(fails)
    if keep:
        assert result.values == [None if i in fails else i * 10 for i in range(n)]
    else:
        assert result.values == []
    # Recording anything again is caught.
    if n:
        again = data.draw(st.integers(0, n - 1))
        with pytest.raises(RuntimeError, match="twice"):
            acct.success(again, 0)


def test_failure_logs_warning_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="resilient_llm")
    acct: BatchAccountant[str] = BatchAccountant()
    acct.expect(3)
    exc = raised(api_error(openai.BadRequestError, 400, "nope"))
    acct.failure(0, exc, attempts=2, item="a")
    records = [r for r in caplog.records if r.name == "resilient_llm"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "item 0" in message
    # The traceback is logged as the record's redacted text (a server may echo the API key).
    assert "Traceback (most recent call last)" in message
    assert "BadRequestError" in message.splitlines()[-1]
    # The same exception failing the rest of its request is logged without repeating the
    # traceback, and its records share the formatted strings.
    acct.failure(1, exc, attempts=2, item="b")
    acct.failure(2, exc, attempts=2, item="c")
    records = [r for r in caplog.records if r.name == "resilient_llm"]
    assert len(records) == 3
    assert "item 2" in records[2].getMessage()
    assert "Traceback" not in records[2].getMessage()
    failures = acct.result(1.0).failures
    assert failures[2].traceback is failures[0].traceback
    assert failures[2].preview == "c"
    assert failures[2].status == 400


def test_streaming_mode_memory_stays_bounded() -> None:
    """keep_values=False: a million-item batch is tracked in memory that does not grow."""
    window = 256

    def run(keep_values: bool, n: int) -> int:
        acct: BatchAccountant[list[float]] = BatchAccountant(keep_values=keep_values)
        rng = random.Random(1)
        value = [0.0] * 4
        gc.collect()
        tracemalloc.start()
        try:
            pending: list[int] = []
            for index in range(n):
                acct.expect()
                pending.append(index)
                if len(pending) == window:
                    # Completions arrive out of order within the in-flight window.
                    rng.shuffle(pending)
                    for done in pending:
                        acct.success(done, value)
                    pending = []
            for done in pending:
                acct.success(done, value)
            result = acct.result(1.0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert result.stats.succeeded == n
        return peak

    small = run(False, 5_000)
    large = run(False, 50_000)
    kept = run(True, 50_000)
    # Streaming: ten times the items, about the same peak (well under one pointer per item).
    assert large < small + 30_000
    assert large < 50_000 * 2
    # The test can tell: keeping values costs at least a pointer per item.
    assert kept > 50_000 * 8


def test_accountant_is_thread_safe() -> None:
    n_threads, per_thread = 8, 2_000
    acct: BatchAccountant[int] = BatchAccountant()
    acct.expect(n_threads * per_thread)
    start = threading.Barrier(n_threads)

    def work(offset: int) -> None:
        start.wait()
        for i in range(offset, n_threads * per_thread, n_threads):
            if i % 97 == 0:
                acct.failure(i, ValueError("x"), attempts=1, item=i)
            else:
                acct.success(i, i)
            acct.count_request()
            acct.count_retry(rate_limited=i % 2 == 0)
            acct.add_usage(1, 2)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = acct.result(1.0)
    total = n_threads * per_thread
    failed = len(range(0, total, 97))
    assert result.stats.failed == failed
    assert result.stats.succeeded == total - failed
    assert result.stats.requests == total
    assert result.stats.retries == total
    assert result.stats.rate_limited == total // 2
    assert result.stats.total_tokens == 2 * total
    assert result.values[5] == 5


def test_racing_double_records_let_exactly_one_win() -> None:
    acct: BatchAccountant[int] = BatchAccountant()
    acct.expect(500)
    wins: list[int] = []
    errors: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        start.wait()
        for i in range(500):
            try:
                acct.success(i, worker)
            except RuntimeError:
                with lock:
                    errors.append(i)
            else:
                with lock:
                    wins.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == list(range(500))
    assert len(errors) == 3 * 500
    assert acct.result(0.1).stats.succeeded == 500


# --- input preparation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (42, "item 7: expected str, got int"),
        (None, "item 7: expected str, got NoneType"),
        (["a"], "item 7: expected str, got list"),
        (b"bytes", "item 7: expected str, got bytes; decode it first"),
        (bytearray(b"x"), "item 7: expected str, got bytearray; decode it first"),
        ("", "item 7: empty string"),
        (" \n\t ", "item 7: whitespace-only string (4 characters)"),
        ("ok \ud800 no", "item 7: cannot be encoded as UTF-8: lone surrogate U+D800 at position 3"),
        ("\udfff", "item 7: cannot be encoded as UTF-8: lone surrogate U+DFFF at position 0"),
        ("one two three four five six", "item 7: 6 tokens, over the limit of 5 tokens per input"),
    ],
)
def test_prepare_item_rejects(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        prepare_item(7, raw, counter=WORDS, max_item_tokens=5, too_long="fail")
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "too_long", "text", "tokens"),
    [
        ("hello world", "fail", "hello world", 2),
        ("  padded  ", "fail", "  padded  ", 1),
        ("one two three four five", "fail", "one two three four five", 5),
        ("one two three four five six seven", "truncate", "one two three four five", 5),
        ("中文 😀", "fail", "中文 😀", 2),
    ],
)
def test_prepare_item_accepts(raw: str, too_long: Any, text: str, tokens: int) -> None:
    item = prepare_item(3, raw, counter=WORDS, max_item_tokens=5, too_long=too_long)
    assert item == Item(3, text, tokens)


def test_prepare_item_too_long_message_says_when_estimated() -> None:
    with pytest.raises(InvalidInput, match=r"estimated: tiktoken unavailable"):
        prepare_item(0, "word " * 1000, counter=EstimatingCounter(), max_item_tokens=100)


def test_prepare_item_truncates_with_the_estimate() -> None:
    counter = EstimatingCounter()
    item = prepare_item(
        0, "word " * 100_000, counter=counter, max_item_tokens=8191, too_long="truncate"
    )
    assert 0 < item.tokens <= 8191
    assert item.tokens == counter.count(item.text)
    assert ("word " * 100_000).startswith(item.text)


def test_prepare_item_validates_options() -> None:
    with pytest.raises(ValueError, match="too_long"):
        prepare_item(0, "x", counter=WORDS, max_item_tokens=5, too_long="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_item_tokens"):
        prepare_item(0, "x", counter=WORDS, max_item_tokens=0)


def test_item_repr_is_short() -> None:
    assert len(repr(Item(0, "x" * 10_000_000, 1))) < 120


@pytest.mark.parametrize(
    ("value", "ok"),
    [("fail", True), ("truncate", True), ("FAIL", False), ("", False), (None, False), (1, False)],
)
def test_validate_too_long(value: object, ok: bool) -> None:
    if ok:
        assert validate_too_long(value) == value
    else:
        with pytest.raises(ValueError, match="too_long must be 'fail' or 'truncate'"):
            validate_too_long(value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1, None),
        (2048, None),
        (100, None),
        (0, ValueError),
        (-5, ValueError),
        (2049, ValueError),
        (1.0, TypeError),
        ("10", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_validate_batch_size(value: object, error: type[Exception] | None) -> None:
    if error is None:
        assert validate_batch_size(value) == value
        assert RequestPlanner(batch_size=value).batch_size == value  # type: ignore[arg-type]
    else:
        with pytest.raises(error, match="batch_size"):
            validate_batch_size(value)
        with pytest.raises(error, match="batch_size"):
            RequestPlanner(batch_size=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, 1.5, "9"])
def test_planner_validates_max_request_tokens(value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="max_request_tokens"):
        RequestPlanner(max_request_tokens=value)


# --- planning ------------------------------------------------------------------------------------


def plan(tokens: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    planner = RequestPlanner(batch_size=batch_size, max_request_tokens=max_tokens)
    requests: list[PlannedRequest] = []
    for index, count in enumerate(tokens):
        request = planner.add(Item(index, f"t{index}", count))
        if request is not None:
            requests.append(request)
    last = planner.flush()
    if last is not None:
        requests.append(last)
    assert planner.pending == 0
    assert planner.flush() is None
    return [request.indices for request in requests]


@pytest.mark.parametrize(
    ("tokens", "batch_size", "max_tokens", "expected"),
    [
        pytest.param([], 3, 100, [], id="empty"),
        pytest.param([1, 1, 1, 1, 1, 1, 1], 3, 100, [[0, 1, 2], [3, 4, 5], [6]], id="by-count"),
        pytest.param([4, 4, 4, 4], 10, 10, [[0, 1], [2, 3]], id="by-tokens"),
        pytest.param([5, 5, 5], 10, 10, [[0, 1], [2]], id="exactly-full"),
        pytest.param([3, 50, 3], 10, 10, [[0], [1], [2]], id="oversize-alone"),
        pytest.param([50, 50], 10, 10, [[0], [1]], id="two-oversize"),
        pytest.param([1, 1, 1], 1, 100, [[0], [1], [2]], id="batch-size-1"),
        pytest.param([9, 1, 9, 1], 10, 10, [[0, 1], [2, 3]], id="fill-then-flush"),
        pytest.param([2] * 5, 2048, 300_000, [[0, 1, 2, 3, 4]], id="defaults-one-request"),
    ],
)
def test_planner_groups(
    tokens: list[int], batch_size: int, max_tokens: int, expected: list[list[int]]
) -> None:
    assert plan(tokens, batch_size, max_tokens) == expected


def test_planner_defaults_are_the_api_limits() -> None:
    planner = RequestPlanner()
    assert planner.batch_size == 2048
    assert planner.max_request_tokens == 300_000
    assert len(plan([1] * 5000, 2048, 300_000)[0]) == 2048
    assert [len(r) for r in plan([8191] * 100, 2048, 300_000)] == [36, 36, 28]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 120), max_size=200),
    st.integers(1, 20),
    st.integers(1, 300),
)
def test_planner_property(tokens: list[int], batch_size: int, max_tokens: int) -> None:
    """Requests hold the inputs in order, within both limits, each as full as it can be."""
    requests = plan(tokens, batch_size, max_tokens)
    assert [i for request in requests for i in request] == list(range(len(tokens)))
    for position, request in enumerate(requests):
        assert 1 <= len(request) <= batch_size
        total = sum(tokens[i] for i in request)
        assert total <= max_tokens or len(request) == 1
        if position + 1 < len(requests):
            following = tokens[requests[position + 1][0]]
            # Greedy: the next input did not fit.
            assert (
                len(request) == batch_size
                or total + following > max_tokens
                or (total >= max_tokens)
            )


def test_planned_request_and_halves() -> None:
    items = tuple(Item(i, f"text{i}", i + 1) for i in range(5))
    request = PlannedRequest.of(items)
    assert request.tokens == 15
    assert len(request) == 5
    assert request.texts == ["text0", "text1", "text2", "text3", "text4"]
    assert request.indices == [0, 1, 2, 3, 4]
    left, right = request.halves()
    assert left.indices == [0, 1]
    assert right.indices == [2, 3, 4]
    assert (left.tokens, right.tokens) == (3, 12)
    assert left.items + right.items == request.items
    with pytest.raises(ValueError, match="fewer than 2"):
        PlannedRequest.of(items[:1]).halves()
    assert "text" not in repr(PlannedRequest.of([Item(0, "text" * 10**6, 1)]))


# --- bisection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api_error(openai.BadRequestError, 400, "bad"), True),
        (api_error(openai.UnprocessableEntityError, 422, "bad"), True),
        (api_error(openai.AuthenticationError, 401, "key"), False),
        (api_error(openai.NotFoundError, 404, "model"), False),
        (api_error(openai.RateLimitError, 429, "slow"), False),
        (api_error(openai.InternalServerError, 500, "oops"), False),
        (Obj(status_code=400), True),
        (Obj(status_code=422), True),
        (Obj(status_code="400"), False),
        (Obj(status_code=None), False),
        (ValueError("400"), False),
        (InvalidInput("item 0: empty string"), False),
    ],
)
def test_is_input_rejection(exc: object, expected: bool) -> None:
    assert is_input_rejection(exc) is expected


def test_error_signature_ignores_request_ids_case_and_spacing() -> None:
    a = api_error(openai.BadRequestError, 400, "Unknown  parameter: 'foo'. (req_123abc)", code="x")
    b = api_error(openai.BadRequestError, 400, "unknown parameter: 'foo'.\n(req_999zzz)", code="x")
    assert error_signature(a) == error_signature(b)
    status, code, type_, param, message = error_signature(a)
    assert (status, code, type_, param) == (400, "x", "invalid_request_error", None)
    assert "unknown parameter" in message


@pytest.mark.parametrize(
    ("left", "right", "alike"),
    [
        pytest.param(
            api_error(openai.BadRequestError, 400, "The model `nope` does not exist", code="m"),
            api_error(openai.BadRequestError, 400, "The model `nope` does not exist", code="m"),
            True,
            id="same-error-names-no-input",
        ),
        pytest.param(
            api_error(
                openai.BadRequestError, 400, "Unrecognized request argument: foo", param="foo"
            ),
            api_error(
                openai.BadRequestError, 400, "Unrecognized request argument: foo", param="foo"
            ),
            True,
            id="unknown-parameter",
        ),
        pytest.param(
            api_error(openai.BadRequestError, 400, "maximum context length is 8192, got 9001"),
            api_error(openai.BadRequestError, 400, "maximum context length is 8192, got 12000"),
            False,
            id="numbers-tell-inputs-apart",
        ),
        pytest.param(
            api_error(openai.BadRequestError, 400, "'$.input[3]' is invalid", param="input"),
            api_error(openai.BadRequestError, 400, "'$.input[3]' is invalid", param="input"),
            False,
            id="names-an-input-by-index",
        ),
        pytest.param(
            api_error(openai.BadRequestError, 400, "invalid", param="input[0]"),
            api_error(openai.BadRequestError, 400, "invalid", param="input[0]"),
            False,
            id="param-names-an-input",
        ),
        pytest.param(
            api_error(openai.BadRequestError, 400, "bad", code="a"),
            api_error(openai.BadRequestError, 400, "bad", code="b"),
            False,
            id="different-codes",
        ),
        pytest.param(
            api_error(openai.BadRequestError, 400, "bad"),
            api_error(openai.UnprocessableEntityError, 422, "bad"),
            False,
            id="different-statuses",
        ),
        pytest.param(
            api_error(openai.AuthenticationError, 401, "bad key"),
            api_error(openai.AuthenticationError, 401, "bad key"),
            False,
            id="not-input-rejections",
        ),
        pytest.param(Obj(400, "same"), Obj(400, "same"), True, id="plain-objects"),
        pytest.param(Obj(400, "same"), Obj(500, "same"), False, id="plain-500"),
    ],
)
def test_both_alike(left: object, right: object, alike: bool) -> None:
    assert both_alike(left, right) is alike


def _request(indices: Sequence[int]) -> PlannedRequest:
    return PlannedRequest.of([Item(i, f"t{i}", 1) for i in indices])


BAD = api_error(openai.BadRequestError, 400, "input 'x' is poisoned (3 tokens)")
BAD2 = api_error(openai.BadRequestError, 400, "input 'y' is poisoned (7 tokens)")
MODEL = api_error(openai.BadRequestError, 400, "The model `nope` does not exist", code="m")
TIMEOUT = timeout_error()


@pytest.mark.parametrize(
    ("left", "left_error", "right", "right_error", "expected"),
    [
        pytest.param([0, 1], None, [2, 3], None, BisectionOutcome(), id="both-ok"),
        pytest.param(
            [0, 1], BAD, [2, 3], None, BisectionOutcome(split=(_request([0, 1]),)), id="left-bad"
        ),
        pytest.param(
            [0], None, [1], BAD, BisectionOutcome(fail=((_request([1]), BAD),)), id="single-bad"
        ),
        pytest.param([0, 1], MODEL, [2, 3], MODEL, BisectionOutcome(fail_all=MODEL), id="alike"),
        pytest.param(
            [0, 1],
            BAD,
            [2, 3],
            BAD2,
            BisectionOutcome(split=(_request([0, 1]), _request([2, 3]))),
            id="both-bad-differently",
        ),
        pytest.param(
            [0, 1],
            TIMEOUT,
            [2, 3],
            BAD,
            BisectionOutcome(split=(_request([2, 3]),), fail=((_request([0, 1]), TIMEOUT),)),
            id="timeout-is-not-split",
        ),
    ],
)
def test_bisect_outcome(
    left: list[int],
    left_error: BaseException | None,
    right: list[int],
    right_error: BaseException | None,
    expected: BisectionOutcome,
) -> None:
    assert bisect_outcome(_request(left), left_error, _request(right), right_error) == expected


@pytest.mark.parametrize(
    ("n", "bound"),
    [(1, 1), (2, 3), (3, 5), (4, 5), (5, 7), (8, 7), (9, 9), (1024, 21), (2048, 23)],
)
def test_bisection_request_bound(n: int, bound: int) -> None:
    assert bisection_request_bound(n) == bound


def test_bisection_request_bound_rejects_zero() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        bisection_request_bound(0)


def simulate(
    n: int, poisoned: set[int], *, request_error: BaseException | None = None
) -> tuple[int, dict[int, BaseException], set[int]]:
    """What a shell does with the core: send, bisect on rejection, record. Returns
    (requests sent, failed items and their errors, succeeded items)."""
    sent = 0
    failed: dict[int, BaseException] = {}
    ok: set[int] = set()

    def send(request: PlannedRequest) -> BaseException | None:
        nonlocal sent
        sent += 1
        if request_error is not None:
            return request_error
        bad = [i for i in request.indices if i in poisoned]
        if bad:
            # Like the API: the message names something specific to the bad input.
            return api_error(openai.BadRequestError, 400, f"input is poisoned ({bad[0]} tokens)")
        return None

    def handle(request: PlannedRequest, error: BaseException | None) -> None:
        if error is None:
            ok.update(request.indices)
        elif is_input_rejection(error) and len(request) > 1:
            left, right = request.halves()
            left_error, right_error = send(left), send(right)
            outcome = bisect_outcome(left, left_error, right, right_error)
            if outcome.fail_all is not None:
                failed.update(dict.fromkeys(request.indices, outcome.fail_all))
                return
            for half, half_error in ((left, left_error), (right, right_error)):
                if half_error is None:
                    ok.update(half.indices)
            for half in outcome.split:
                handle(half, left_error if half is left else right_error)
            for half, half_error in outcome.fail:
                failed.update(dict.fromkeys(half.indices, half_error))
        else:
            failed.update(dict.fromkeys(request.indices, error))

    whole = _request(range(n))
    handle(whole, send(whole))
    return sent, failed, ok


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100, 2048])
def test_one_poisoned_input_fails_alone_within_the_bound(n: int) -> None:
    for bad in {0, n // 2, n - 1}:
        sent, failed, ok = simulate(n, {bad})
        assert set(failed) == {bad}
        assert ok == set(range(n)) - {bad}
        assert sent <= bisection_request_bound(n)


@pytest.mark.parametrize("n", [2, 5, 64, 2048])
def test_an_error_naming_no_input_stops_bisection(n: int) -> None:
    sent, failed, ok = simulate(n, set(), request_error=MODEL)
    assert sent == 3
    assert set(failed) == set(range(n))
    assert all(error is MODEL for error in failed.values())
    assert ok == set()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_bisection_property(case: tuple[int, set[int]]) -> None:
    """Exactly the poisoned inputs fail; never more than 2n - 1 requests."""
    n, poisoned = case
    sent, failed, ok = simulate(n, poisoned)
    assert set(failed) == poisoned
    assert ok == set(range(n)) - poisoned
    assert sent <= 2 * n - 1
    if len(poisoned) == 1:
        assert sent <= bisection_request_bound(n)


# --- text_chunks ---------------------------------------------------------------------------------


def non_space(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(
    ("text", "max_tokens", "counter", "expected"),
    [
        pytest.param("short text", 10, WORDS, ["short text"], id="fits"),
        pytest.param("  padded \n", 10, WORDS, ["padded"], id="stripped"),
        pytest.param(" \n\t ", 10, WORDS, [], id="only-whitespace"),
        pytest.param(
            "a b c\n\nd e f\n\ng h i", 6, WORDS, ["a b c\n\nd e f", "g h i"], id="paragraphs"
        ),
        pytest.param(
            "One two. Three four. Five six.\n\nSeven.",
            4,
            WORDS,
            ["One two. Three four.", "Five six.", "Seven."],
            id="sentences-inside-a-long-paragraph",
        ),
        pytest.param(
            "a b c d e f g h i",
            4,
            WORDS,
            ["a b c d", "e f g h", "i"],
            id="words-inside-a-long-sentence",
        ),
        pytest.param(
            "abcdefghij klm", 4, CharCounter(), ["abcd", "efgh", "ij", "klm"], id="hard-cut"
        ),
        pytest.param(
            "第一句。第二句！第三句？",
            4,
            CharCounter(),
            ["第一句。", "第二句！", "第三句？"],
            id="cjk",
        ),
    ],
)
def test_text_chunks(
    text: str, max_tokens: int, counter: TokenCounter, expected: list[str]
) -> None:
    assert text_chunks(text, max_tokens=max_tokens, counter=counter) == expected


@pytest.mark.parametrize(("value", "error"), [(3, ValueError), (0, ValueError), (4.0, TypeError)])
def test_text_chunks_validates_max_tokens(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_tokens"):
        text_chunks("text", max_tokens=value, counter=WORDS)


_SENTENCES = st.lists(
    st.sampled_from(
        [
            "The quick brown fox jumps.",
            "Was it a cat?",
            "Yes!",
            "人工智能是计算机科学的一个分支。",
            "😀👍🏽",
            "supercalifragilisticexpialidocious" * 3,
            "a",
            "1234567890",
            "",
        ]
    ),
    min_size=0,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(_SENTENCES, st.sampled_from([" ", "\n", "  ", "\n\n", "\n \n"])), max_size=10
    ),
    st.integers(4, 60),
)
def test_text_chunks_property(paragraphs: list[tuple[list[str], str]], max_tokens: int) -> None:
    text = "".join(sep.join(sentences) + "\n\n" for sentences, sep in paragraphs)
    counter = EstimatingCounter()
    chunks = text_chunks(text, max_tokens=max_tokens, counter=counter)
    assert non_space("".join(chunks)) == non_space(text)
    for chunk in chunks:
        assert chunk
        assert chunk == chunk.strip()
        assert counter.count(chunk) <= max_tokens


@pytest.fixture(scope="module")
def tiktoken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiktoken_cache(tmp_path_factory.mktemp("tiktoken"))


@pytest.fixture
def exact_counter(tiktoken_dir: Path, monkeypatch: pytest.MonkeyPatch) -> TiktokenCounter:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_dir))
    monkeypatch.delenv("RESILIENT_LLM_TOKENIZER", raising=False)
    _tokens._clear_cache()
    counter = _tokens.get_token_counter("gpt-4o-mini")
    _tokens._clear_cache()
    assert isinstance(counter, TiktokenCounter)
    return counter


@pytest.mark.parametrize("max_tokens", [4, 5, 16, 200])
def test_text_chunks_with_real_tokens(exact_counter: TiktokenCounter, max_tokens: int) -> None:
    text = (
        "Paragraph one has a few sentences. It goes on! Does it end?\n\n"
        + "😀👨‍👩‍👧‍👦🏳️‍🌈" * 5
        + " "
        + "人工智能是计算机科学的一个分支。" * 4
        + "\n\n"
        + "x" * 500
    )
    chunks = text_chunks(text, max_tokens=max_tokens, counter=exact_counter)
    assert non_space("".join(chunks)) == non_space(text)
    assert all(exact_counter.count(chunk) <= max_tokens for chunk in chunks)


def test_text_chunks_of_a_large_text_is_fast_enough() -> None:
    """Linear work: a 2 MB text is chunked without counting joined prefixes over and over."""
    counter = EstimatingCounter()
    paragraph = "A sentence of moderate length that repeats. " * 40
    text = "\n\n".join([paragraph] * 1000) + " " + "y" * 100_000
    chunks = text_chunks(text, max_tokens=4000, counter=counter)
    assert non_space("".join(chunks)) == non_space(text)
    assert all(counter.count(chunk) <= 4000 for chunk in chunks)
