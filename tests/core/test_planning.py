"""Input checks and request planning: bounds first, tokens counted only where it matters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm._batch.planning import Item, PlannedRequest, RequestPlanner, prepare_item
from resilient_llm._config import check_batch_size, check_too_long
from resilient_llm._exceptions import InvalidInput
from resilient_llm._tokens import EstimatingCounter
from tests.core._helpers import WORDS, WordCounter

# --- input preparation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (42, "expected str, got int"),
        (None, "expected str, got NoneType"),
        (["a"], "expected str, got list"),
        (b"bytes", "expected str, got bytes; decode it first"),
        (bytearray(b"x"), "expected str, got bytearray; decode it first"),
        ("", "empty string"),
        (" \n\t ", "whitespace-only string (4 characters)"),
        ("ok \ud800 no", "cannot be encoded as UTF-8: lone surrogate U+D800 at position 3"),
        ("\udfff", "cannot be encoded as UTF-8: lone surrogate U+DFFF at position 0"),
        ("one two three four five six", "6 tokens, over the limit of 5 tokens per input"),
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
    # Each of these is longer than 5 bytes, so its tokens had to be counted.
    assert item == Item(3, text, tokens, exact=True)


class NoCounting:
    """A counter that must not be asked: the UTF-8 bound is enough."""

    name = "none"
    exact = True

    def count(self, text: str) -> int:
        raise AssertionError(f"counted {text!r}")

    def count_many(self, texts: Any) -> list[int]:
        raise AssertionError("counted")

    def truncate(self, text: str, max_tokens: int) -> str:
        raise AssertionError("truncated")


@pytest.mark.parametrize(("raw", "bound"), [("short", 5), ("é" * 100, 200), ("😀" * 2000, 8000)])
def test_prepare_item_never_counts_what_its_utf8_length_bounds(raw: str, bound: int) -> None:
    item = prepare_item(0, raw, counter=NoCounting(), max_item_tokens=8191)
    assert item == Item(0, raw, bound, exact=False)


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


def test_item_repr_is_short() -> None:
    assert len(repr(Item(0, "x" * 10_000_000, 1))) < 120


@pytest.mark.parametrize(
    ("value", "ok"),
    [("fail", True), ("truncate", True), ("FAIL", False), ("", False), (None, False), (1, False)],
)
def test_check_too_long(value: object, ok: bool) -> None:
    if ok:
        assert check_too_long(value) == value
    else:
        with pytest.raises(ValueError, match="too_long must be 'fail' or 'truncate'"):
            check_too_long(value)


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
def test_check_batch_size(value: object, error: type[Exception] | None) -> None:
    if error is None:
        assert check_batch_size(value) == value
        assert RequestPlanner(batch_size=value).batch_size == value  # type: ignore[arg-type]
    else:
        with pytest.raises(error, match="batch_size"):
            check_batch_size(value)
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
        requests.extend(planner.add(Item(index, f"t{index}", count, exact=True)))
    last = planner.flush()
    if last is not None:
        requests.append(last)
    assert planner.pending == 0
    assert planner.flush() is None
    return [[item.index for item in request.items] for request in requests]


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
    left, right = request.halves()
    assert [item.index for item in left.items] == [0, 1]
    assert [item.index for item in right.items] == [2, 3, 4]
    assert (left.tokens, right.tokens) == (3, 12)
    assert left.items + right.items == request.items
    with pytest.raises(ValueError, match="fewer than 2"):
        PlannedRequest.of(items[:1]).halves()
    assert "text" not in repr(PlannedRequest.of([Item(0, "text" * 10**6, 1)]))
    parts = request.split(2)
    assert [[item.index for item in part.items] for part in parts] == [[0, 1], [2, 3], [4]]
    assert [part.tokens for part in parts] == [3, 7, 5]


class CountingWords(WordCounter):
    def __init__(self) -> None:
        self.counted: list[str] = []

    def count(self, text: str) -> int:
        self.counted.append(text)
        return super().count(text)


def test_planner_counts_tokens_only_when_the_bounds_cross_the_limit() -> None:
    counter = CountingWords()
    planner = RequestPlanner(batch_size=100, max_request_tokens=20, counter=counter)
    # Bounds (bytes) of 9 each: two fit under 20 without counting anything.
    first = [Item(i, "a b c d e", 9) for i in range(2)]
    assert planner.add(first[0]) == []
    assert planner.add(first[1]) == []
    assert counter.counted == []
    # A third would cross 20 by its bound: now the words are counted (5 each), and it fits.
    assert planner.add(Item(2, "a b c d e", 9)) == []
    assert len(counter.counted) == 3
    request = planner.flush()
    assert request is not None
    assert request.tokens == 15
    assert all(item.exact for item in request.items)


def test_planner_takes_a_lowered_batch_size_from_then_on() -> None:
    planner = RequestPlanner(batch_size=8)
    out = [r for i in range(8) for r in planner.add(Item(i, "x", 1, exact=True))]
    assert [len(r) for r in out] == [8]
    planner.batch_size = 3
    out = [r for i in range(8, 15) for r in planner.add(Item(i, "x", 1, exact=True))]
    assert [len(r) for r in out] == [3, 3]
