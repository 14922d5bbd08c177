"""A token count that needs nothing: an over-estimate, safe for planning requests.

The pieces mirror tiktoken's pre-tokeniser (a leading space joins the next word or punctuation
run; digits go in groups of three; whitespace runs are their own tokens), then each piece gets
a cost that is at least its token count in cl100k_base and o200k_base. Measured on English
prose, code, JSON, HTML, CSV, numbers, hashes, UUIDs, base64, random letters and punctuation,
and text in 16 scripts plus emoji: never below the real count, about 1.5-2x above it on prose.
The one case it can miss is text of uniformly random code points; the API then rejects that
input and bisection isolates it like any other invalid input.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence

__all__ = ["EstimatingCounter", "check_max_tokens"]


def check_max_tokens(max_tokens: int) -> None:
    """Raise ``ValueError`` unless ``max_tokens`` is an int >= 0."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an int >= 0, got {max_tokens!r}")


_PIECE = re.compile(r" ?[^\W\d_]+| ?(?:[^\s\w]|_)+|\d+|\s+")
_CASE_RUN = re.compile(r"[A-Z]*[a-z]+|[A-Z]+")
_ASCII_OR_NOT = re.compile(r"[A-Za-z]+|[^A-Za-z]")
_VOWELS = frozenset("aeiouy")
# Frequent English words: a single token each in both encodings, with or without a leading space.
_COMMON_WORDS_TEXT = """
about above after again against air all almost along also always and another answer any are
around away back because been being below best better between big body both boy but called can
car change children city come could country cut day days did different does done door down
during each earth end even ever every example face family far father few find first fish five
following food for form found four friends from get give given going good got great group had
hand hard has have head help her here high his hold home house how however important into its
just keep kind know land large last later learn leave left let life light like line little
live long look made make man many may means men money more most mother move much must name
near need never new next night not now number off often old once one only other others our out
over own page paper part parts people picture place play point put read red right room same
say school sea second see seen sentence set she should show side since small some something
sometimes soon sound still stop story study such sun sure take tell than that the their them
then there these they thing things think this those thought three through time times today too
top tree true try turn two under until use using usually very want was water way well were
what when where which while white who whole why will with without word words work world would
write year years young your
"""
_COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Per-character cost of non-ASCII characters. Scripts whose text tokenises densely (alphabetic
# scripts in two bytes, CJK, kana, hangul, Indic scripts, Thai, Vietnamese) cost less than their
# UTF-8 length; anything else costs its full length, the hard bound (a token is at least a byte).
_DENSE_2 = ((0x80, 0x250), (0x370, 0x700))
_DENSE_3 = (
    (0x900, 0xE80),
    (0x1E00, 0x1F00),
    (0x2000, 0x2070),
    (0x3000, 0x3100),
    (0x4E00, 0xA000),
    (0xAC00, 0xD7B0),
    (0xFF00, 0xFFF0),
)


def _char_cost(char: str) -> float:
    code = ord(char)
    if code < 0x80:
        return 1.0
    if code < 0x800:
        return 1.5 if any(lo <= code < hi for lo, hi in _DENSE_2) else 2.0
    if code < 0x10000:
        return 2.0 if any(lo <= code < hi for lo, hi in _DENSE_3) else 3.0
    return 4.0


def _letters_cost(body: str) -> int:
    if body.isascii():
        return max(1, _ascii_letters_cost(body))
    cost = 0.0
    for part in _ASCII_OR_NOT.findall(body):
        cost += _ascii_letters_cost(part) if part.isascii() else _char_cost(part)
    return max(1, math.ceil(cost))


def _ascii_letters_cost(body: str) -> int:
    runs = _CASE_RUN.findall(body)
    shouting = sum(1 for run in runs if len(run) > 2 and run[1].isupper() and run[-1].islower())
    if (len(runs) > 2 and len(body) < 5 * len(runs)) or shouting > 1:
        # Case flips every few letters: base64, hashes, random identifiers tokenise one or two
        # letters at a time.
        return math.ceil(len(body) * 0.8)
    cost = 0
    for run in runs:
        lower = run.lstrip(_UPPER)
        upper = len(run) - len(lower)
        if lower:
            size = len(lower)
            if size <= 2 or (upper <= 1 and run.lower() in _COMMON_WORDS):
                cost += 1
            else:
                # Natural words in any Latin-script language measured stay under 0.45 tokens per
                # letter; vowel-poor runs (random letters, hashes) need more.
                vowels = sum(1 for char in lower if char in _VOWELS)
                wordlike = size <= 20 and vowels >= 0.3 * size
                cost += math.ceil(size * (0.45 if wordlike else 0.65))
            if upper > 1:
                cost += math.ceil((upper - 1) / 2) if upper <= 5 else math.ceil((upper - 1) * 0.65)
        else:
            cost += math.ceil(upper / 2) if upper <= 4 else math.ceil(upper * 0.65)
    return cost


def _piece_cost(piece: str) -> int:
    body = piece[1:] if len(piece) > 1 and piece[0] == " " and not piece[1].isspace() else piece
    first = body[0]
    if first.isspace():
        changes = sum(1 for a, b in itertools.pairwise(body) if a != b)
        return 1 + changes + len(body) // 16
    if first.isalpha():
        return _letters_cost(body)
    ascii_part = sum(1 for char in body if char.isascii())
    other = sum(_char_cost(char) for char in body if not char.isascii())
    if first.isdigit():
        return math.ceil(ascii_part / 3 + other)
    return max(1, math.ceil(ascii_part * 0.7 + other))


# Words repeat: caching the cost of short pieces makes the estimate about as fast as tiktoken.
_short_piece_cost = functools.lru_cache(maxsize=1 << 16)(_piece_cost)


def _estimate(text: str) -> int:
    total = sum(
        _short_piece_cost(piece) if len(piece) <= 24 else _piece_cost(piece)
        for piece in _PIECE.findall(text)
    )
    # A margin for the pieces that tokenise worse than average; short texts need it most.
    return math.ceil(total * 1.05) + 6 if total else 0


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class EstimatingCounter:
    """An over-estimate of the token count, for when tiktoken cannot be used.

    Never more than the UTF-8 length (every token is at least one byte, so that bound is exact
    as an upper bound) and, on the text measured (see the module source), never less than the
    real count of ``cl100k_base`` or ``o200k_base``.

    Args:
        encoding: the encoding being stood in for; only used in :attr:`name`.
    """

    exact = False

    def __init__(self, encoding: str = "cl100k_base") -> None:
        self.encoding = encoding
        self.name: str = f"estimate({encoding})"

    def __repr__(self) -> str:
        return f"EstimatingCounter({self.encoding!r})"

    def count(self, text: str) -> int:
        """An over-estimate of the number of tokens in ``text``."""
        if not text:
            return 0
        return min(_estimate(text), _utf8_length(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``."""
        return [self.count(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix found, cut on a character boundary, with ``count <= max_tokens``.

        Raises:
            ValueError: ``max_tokens`` is negative.
        """
        check_max_tokens(max_tokens)
        if self.count(text) <= max_tokens:
            return text
        # Gallop to a prefix over the limit so a 10 MB text costs O(max_tokens), not O(len).
        good, bad = 0, min(len(text), 16 * (max_tokens + 8))
        while bad < len(text) and self.count(text[:bad]) <= max_tokens:
            good, bad = bad, min(len(text), bad * 2)
        # The estimate is not strictly monotonic in the prefix length: `good` only ever moves to
        # a prefix whose count was checked, so the result is always within the limit.
        while bad - good > 1:
            middle = (good + bad) // 2
            if self.count(text[:middle]) <= max_tokens:
                good = middle
            else:
                bad = middle
        return text[:good]
