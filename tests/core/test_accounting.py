"""The accountant: every input recorded exactly once, in any order, from any thread."""

from __future__ import annotations

import gc
import logging
import random
import threading
import tracemalloc
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm._batch.accounting import BatchAccountant
from resilient_llm._batch.results import BatchStats
from tests.core._helpers import api_error, raised

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


def record(acct: BatchAccountant[str], kind: str, index: Any) -> None:
    if kind == "s":
        acct.success(index, f"v{index}")
    else:
        acct.failure(index, ValueError(f"e{index}"), attempts=1, item=f"in{index}")


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
            acct.success(index, f"v{index}")
            assert acct.done == done
    assert acct.done == 6
    acct.count(requests=3)
    acct.count(requests=1)
    acct.count(retries=3, rate_limited=1, timeouts=1)
    acct.count(bisections=1)
    acct.count(prompt_tokens=10, total_tokens=12)
    acct.count(prompt_tokens=5, total_tokens=5)
    assert acct.limit_size(64)
    assert acct.limit_size(32)
    assert not acct.limit_size(48)
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
        size_limit=32,
    )


def test_counts_refuse_what_only_recording_may_change() -> None:
    acct: BatchAccountant[str] = BatchAccountant()
    for name in ("succeeded", "failed", "not_sent", "bogus"):
        with pytest.raises(ValueError, match=name):
            acct.count(**{name: 1})


def test_only_inputs_the_ended_batch_never_sent_count_as_not_sent() -> None:
    acct: BatchAccountant[str] = BatchAccountant()
    acct.expect(4)
    acct.success(0, "v")
    acct.failure(1, ValueError("sent and failed"), attempts=2, item="b")
    acct.failure(2, ValueError("the batch ended first"), attempts=0, item="c", not_sent=True)
    acct.failure(3, ValueError("refused by the input checks"), attempts=0, item="")
    result = acct.result(1.0)
    stats = result.stats
    assert (stats.succeeded, stats.failed, stats.not_sent) == (1, 3, 1)
    assert [failure.not_sent for failure in result.failures] == [False, True, False]
    assert result.failures[1].as_dict()["not_sent"] is True


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


def test_item_failures_log_at_debug_and_share_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One WARNING per failed request comes from the batch (flow.py); per item, DEBUG only, so a
    # request of 2,048 inputs failing whole is one line at WARNING, not 2,048.
    caplog.set_level(logging.DEBUG, logger="resilient_llm")
    acct: BatchAccountant[str] = BatchAccountant()
    acct.expect(3)
    exc = raised(api_error(openai.BadRequestError, 400, "nope"))
    for index, item in enumerate("abc"):
        acct.failure(index, exc, attempts=2, item=item)
    records = [r for r in caplog.records if r.name == "resilient_llm"]
    assert [r.levelno for r in records] == [logging.DEBUG] * 3
    assert "item 2" in records[2].getMessage()
    assert "BadRequestError" in records[2].getMessage()
    failures = acct.result(1.0).failures
    assert "Traceback (most recent call last)" in failures[0].traceback
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
            acct.count(requests=1, retries=1, rate_limited=int(i % 2 == 0))
            acct.count(prompt_tokens=1, total_tokens=2)

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
