"""The fast base64 decoder of embeddings answers against a plain reference (SPEC §6 checks).

``decode_embeddings`` turns every base64 vector of an answer into floats in one array and checks
finiteness on the raw bytes first; these tests hold it to what the one-vector-at-a-time reading
gives: the same vectors, and an ``InvalidResponse`` wherever that reading finds a defect.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import InvalidResponse
from resilient_llm._answers import decode_embeddings


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _body(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": entries, "usage": {}}).encode()


def reference(entries: list[dict[str, Any]], expected: int) -> list[list[float]]:
    """One vector at a time, the obvious way."""
    if len(entries) != expected:
        raise InvalidResponse("count")
    vectors: list[list[float] | None] = [None] * expected
    length = None
    for entry in entries:
        index = entry["index"]
        if not 0 <= index < expected or vectors[index] is not None:
            raise InvalidResponse("index")
        raw = base64.b64decode(entry["embedding"], validate=True)
        if not raw or len(raw) % 4:
            raise InvalidResponse("length")
        vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if length is not None and len(vector) != length:
            raise InvalidResponse("length")
        length = len(vector)
        if not all(math.isfinite(value) for value in vector):
            raise InvalidResponse("finite")
        vectors[index] = vector
    return vectors  # type: ignore[return-value]


float32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    vectors=st.lists(st.lists(finite32, min_size=1, max_size=12), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    poison=st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 11), float32)),
)
def test_decoder_agrees_with_the_reference(
    vectors: list[list[float]], order: Any, poison: tuple[int, int, float] | None
) -> None:
    if poison is not None and poison[0] < len(vectors):
        row = vectors[poison[0]]
        row[poison[1] % len(row)] = poison[2]
    entries = [{"index": i, "embedding": _b64(v)} for i, v in enumerate(vectors)]
    order.shuffle(entries)
    try:
        expected = reference(entries, len(vectors))
    except InvalidResponse:
        with pytest.raises(InvalidResponse):
            decode_embeddings(_body(entries), len(vectors))
        return
    assert decode_embeddings(_body(entries), len(vectors)).vectors == expected


@pytest.mark.parametrize(
    "value",
    [3.4e38, -3.4e38, 1.7e38, float.fromhex("0x1.fffffep+127")],
    ids=["max", "min", "huge", "largest-float32"],
)
def test_the_largest_finite_values_pass(value: float) -> None:
    # Their high byte is the one NaN and infinity have too: the precise check must clear them.
    payload = decode_embeddings(_body([{"index": 0, "embedding": _b64([0.5, value])}]), 1)
    assert payload.vectors == [[0.5, struct.unpack("<f", struct.pack("<f", value))[0]]]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_a_value_that_is_not_finite_is_named(value: float) -> None:
    entries = [
        {"index": 0, "embedding": _b64([0.1, 0.2])},
        {"index": 1, "embedding": _b64([0.3, value])},
    ]
    with pytest.raises(InvalidResponse, match="index 1 holds NaN or infinity"):
        decode_embeddings(_body(entries), 2)


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        ("AAAA", "3 bytes is not a whole number of float32 values"),
        ("AAA*", "cannot be read"),
        ("", "index 0 is empty"),
    ],
    ids=["three-bytes", "not-base64", "empty"],
)
def test_unreadable_base64_is_refused(embedding: str, message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        decode_embeddings(_body([{"index": 0, "embedding": embedding}]), 1)


def test_float_and_base64_entries_mixed_are_read_one_by_one() -> None:
    entries: list[dict[str, Any]] = [
        {"index": 1, "embedding": _b64([0.5, 0.25])},
        {"index": 0, "embedding": [1.0, 2]},
    ]
    assert decode_embeddings(_body(entries), 2).vectors == [[1.0, 2.0], [0.5, 0.25]]


def test_dimensions_are_held_on_the_fast_path() -> None:
    body = _body([{"index": 0, "embedding": _b64([0.5, 0.25, 0.125])}])
    with pytest.raises(InvalidResponse, match="has 3 values; dimensions: 4"):
        decode_embeddings(body, 1, dimensions=4)
    assert decode_embeddings(body, 1, dimensions=3).vectors == [[0.5, 0.25, 0.125]]
