# CJK punctuation in sentence-splitting cases is the point.
# ruff: noqa: RUF001
"""Chunking long texts and the map-reduce summary steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import _tokens
from resilient_llm._batch.chunking import text_chunks
from resilient_llm._tokens import EstimatingCounter, TiktokenCounter, TokenCounter
from tests.conftest_tokens import build_tiktoken_cache
from tests.core._helpers import WORDS, CharCounter

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
