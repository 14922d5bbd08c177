"""Splitting a long text into chunks of at most N tokens, for map-reduce summaries."""

from __future__ import annotations

import itertools
import re
from collections.abc import Generator
from dataclasses import dataclass

from .._exceptions import ResilientLLMError
from .._inputs import utf8_length
from .._tokens import TokenCounter

__all__ = ["SummaryStep", "summary_steps", "text_chunks"]

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[\u3002\uff01\uff1f])\s*|\n\s*")
_WHITESPACE = re.compile(r"\s+")
_SPLITTERS = (_PARAGRAPH, _SENTENCE, _WHITESPACE)
# Every code point is at most 4 UTF-8 bytes, hence at most 4 tokens: the smallest limit for
# which every character fits in a chunk.
_MIN_CHUNK_TOKENS = 4


def text_chunks(text: str, *, max_tokens: int, counter: TokenCounter) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` tokens, for map-reduce summaries.

    Splits on paragraph breaks, then sentence ends, then whitespace, and cuts inside a word only
    when one word alone is over the limit. Chunks are packed greedily, in order; joined, they
    hold every non-whitespace character of ``text``. Whitespace around chunks is stripped.

    Args:
        text: the text.
        max_tokens: the most tokens per chunk (at least 4).
        counter: the token counter of the model.

    Returns:
        The chunks; ``[]`` for a text of only whitespace.

    Raises:
        ValueError: ``max_tokens`` is under 4.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be an int, not {type(max_tokens).__name__}")
    if max_tokens < _MIN_CHUNK_TOKENS:
        raise ValueError(f"max_tokens must be >= {_MIN_CHUNK_TOKENS}, got {max_tokens}")
    stripped = text.strip()
    if not stripped:
        return []
    chunks: list[str] = []
    _chunk_into(chunks, stripped, 0, max_tokens, counter)
    return chunks


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after each match of ``pattern``: the separators stay with the piece before."""
    cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _emit(chunks: list[str], text: str) -> None:
    chunk = text.strip()
    if chunk:
        chunks.append(chunk)


def _chunk_into(
    chunks: list[str], text: str, level: int, max_tokens: int, counter: TokenCounter
) -> None:
    if counter.count(text) <= max_tokens:
        _emit(chunks, text)
        return
    if level == len(_SPLITTERS):
        _hard_cut(chunks, text, max_tokens, counter)
        return
    pieces = _pieces(text, _SPLITTERS[level])
    if len(pieces) == 1:
        _chunk_into(chunks, text, level + 1, max_tokens, counter)
        return
    # Counting each piece once and packing by the sum keeps this linear; each packed chunk is
    # then checked as a whole, since tokens do not add up exactly across a join.
    counts = counter.count_many(pieces)
    group: list[str] = []
    group_tokens = 0
    for piece, tokens in zip(pieces, counts, strict=True):
        if tokens > max_tokens:
            _pack(chunks, group, level, max_tokens, counter)
            group, group_tokens = [], 0
            _chunk_into(chunks, piece, level + 1, max_tokens, counter)
            continue
        if group and group_tokens + tokens > max_tokens:
            _pack(chunks, group, level, max_tokens, counter)
            group, group_tokens = [], 0
        group.append(piece)
        group_tokens += tokens
    _pack(chunks, group, level, max_tokens, counter)


def _pack(
    chunks: list[str], group: list[str], level: int, max_tokens: int, counter: TokenCounter
) -> None:
    if not group:
        return
    joined = "".join(group)
    if len(group) == 1 or counter.count(joined.strip()) <= max_tokens:
        if len(group) == 1:
            _chunk_into(chunks, joined, level + 1, max_tokens, counter)
        else:
            _emit(chunks, joined)
        return
    middle = len(group) // 2
    _pack(chunks, group[:middle], level, max_tokens, counter)
    _pack(chunks, group[middle:], level, max_tokens, counter)


def _hard_cut(chunks: list[str], text: str, max_tokens: int, counter: TokenCounter) -> None:
    # Truncating a bounded window keeps a 10 MB word linear: a prefix shorter than the best is
    # still a valid chunk.
    window = 16 * max_tokens
    rest = text
    while rest:
        head = counter.truncate(rest[:window], max_tokens)
        if not head:
            # Unreachable for max_tokens >= 4 (no character is over 4 tokens); never loop.
            head = rest[0]
        _emit(chunks, head)
        rest = rest[len(head) :].lstrip()


@dataclass(frozen=True, slots=True)
class SummaryStep:
    """One chat completion of a summary: ``combine`` merges partial summaries."""

    text: str
    combine: bool


def summary_steps(
    text: str, *, counter: TokenCounter, max_input_tokens: int
) -> Generator[SummaryStep, str, str]:
    """Summarise ``text``: directly, or map-reduce when it is over ``max_input_tokens``.

    Yields each text to summarise and receives its summary; returns the final summary. Tokens
    are counted only when the text's UTF-8 length (an upper bound) could cross the limit.

    Raises:
        ResilientLLMError: the chunk summaries are as long as the chunks (no progress).
    """
    if utf8_length(text) <= max_input_tokens or counter.count(text) <= max_input_tokens:
        return (yield SummaryStep(text, combine=False))
    pieces = text_chunks(text, max_tokens=max_input_tokens, counter=counter)
    while True:
        summaries = []
        for piece in pieces:
            summaries.append((yield SummaryStep(piece, combine=False)))
        joined = "\n\n".join(summaries)
        if counter.count(joined) <= max_input_tokens:
            return (yield SummaryStep(joined, combine=True))
        shorter = text_chunks(joined, max_tokens=max_input_tokens, counter=counter)
        if len(shorter) >= len(pieces):
            raise ResilientLLMError(
                "map-reduce summary does not converge: the chunk summaries are as long as the "
                "chunks (lower max_words or raise max_input_tokens)"
            )
        pieces = shorter
