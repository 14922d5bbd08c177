"""Turning inputs into requests: each input checked and bounded, then grouped within the limits.

Tokens are counted only where a limit can be reached: an input's UTF-8 length bounds its token
count (byte-level BPE makes at least one byte per token), so an input of at most 8,191 bytes can
never be over the per-input limit, and a request whose bounds add up to at most 300,000 can never
be over the per-request one. Only past those bounds is the tokenizer run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .._config import MAX_BATCH_SIZE, TooLong, check_batch_size, check_int
from .._exceptions import InvalidInput
from .._inputs import text_problem, utf8_length
from .._tokens import TokenCounter
from .results import preview

__all__ = [
    "MAX_REQUEST_TOKENS",
    "Item",
    "PlannedRequest",
    "RequestPlanner",
    "prepare_item",
    "rate_cost",
]

#: The embeddings endpoint accepts at most this many tokens per request, all inputs together.
MAX_REQUEST_TOKENS = 300_000


@dataclass(frozen=True, slots=True)
class Item:
    """An input checked and bounded, ready to be planned into a request.

    Attributes:
        index: its position in the batch.
        text: the text to send (cut to the limit when ``too_long="truncate"``).
        tokens: its token count, or an upper bound of it when ``exact`` is False.
        exact: whether ``tokens`` was counted.
    """

    index: int
    text: str
    tokens: int
    exact: bool = False

    def counted(self, counter: TokenCounter) -> Item:
        """This item with its tokens counted."""
        if self.exact:
            return self
        return replace(self, tokens=min(self.tokens, counter.count(self.text)), exact=True)

    def __repr__(self) -> str:
        return f"Item(index={self.index}, tokens={self.tokens}, text={preview(self.text, 40)!r})"


def rate_cost(items: Sequence[Item]) -> int:
    """The tokens to book with rate limiters for ``items``: counted tokens where known, else
    four bytes a token (what servers bill for typical text; the UTF-8 bound would book four
    times too much and leave most of a token budget unused)."""
    return sum(item.tokens if item.exact else -(-item.tokens // 4) for item in items)


def prepare_item(
    index: int,
    raw: object,
    *,
    counter: TokenCounter,
    max_item_tokens: int,
    too_long: TooLong = "fail",
) -> Item:
    """Check one input and bound its tokens, so that bad input never reaches the network.

    Raises:
        InvalidInput: not a ``str``; empty or whitespace only; a lone surrogate; over
            ``max_item_tokens`` with ``too_long="fail"``.
    """
    problem = text_problem(raw)
    if problem is not None:
        raise InvalidInput(problem)
    assert isinstance(raw, str)
    bound = utf8_length(raw)
    if bound <= max_item_tokens:
        return Item(index, raw, bound)
    tokens = counter.count(raw)
    if tokens <= max_item_tokens:
        return Item(index, raw, tokens, exact=True)
    if too_long == "fail":
        how = "" if counter.exact else " (estimated: tiktoken unavailable)"
        raise InvalidInput(
            f"{tokens} tokens{how}, over the limit of {max_item_tokens} tokens per input "
            "(too_long='fail'; pass too_long='truncate' to cut it)"
        )
    text = counter.truncate(raw, max_item_tokens)
    return Item(index, text, counter.count(text), exact=True)


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """Inputs to send in one request.

    Attributes:
        items: the inputs, in input order.
        tokens: their tokens together (an upper bound).
    """

    items: tuple[Item, ...]
    tokens: int

    @classmethod
    def of(cls, items: Sequence[Item]) -> PlannedRequest:
        """A request of ``items`` with their tokens summed."""
        return cls(tuple(items), sum(item.tokens for item in items))

    @property
    def texts(self) -> list[str]:
        """The texts, as the API's ``input`` list."""
        return [item.text for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def halves(self) -> list[PlannedRequest]:
        """Split in two for bisection, in order; the first half is the shorter when odd.

        Raises:
            ValueError: the request has fewer than two items.
        """
        if len(self.items) < 2:
            raise ValueError("a request of fewer than 2 items cannot be split")
        middle = len(self.items) // 2
        return [PlannedRequest.of(self.items[:middle]), PlannedRequest.of(self.items[middle:])]

    def split(self, size: int) -> list[PlannedRequest]:
        """Consecutive requests of at most ``size`` items, in order."""
        check_int("size", size)
        return [
            PlannedRequest.of(self.items[start : start + size])
            for start in range(0, len(self.items), size)
        ]

    def __repr__(self) -> str:
        first = self.items[0].index if self.items else None
        last = self.items[-1].index if self.items else None
        return (
            f"PlannedRequest(items={len(self.items)}, indices={first}..{last}, "
            f"tokens={self.tokens})"
        )


class RequestPlanner:
    """Groups prepared inputs, in order, into requests within both API limits.

    A request holds at most ``batch_size`` inputs and at most ``max_request_tokens`` tokens.
    An input larger than ``max_request_tokens`` on its own goes alone in a request.
    ``batch_size`` may be lowered while planning (the server turned out to accept fewer).
    Not thread-safe: one reader of the input feeds it.
    """

    def __init__(
        self,
        batch_size: int = MAX_BATCH_SIZE,
        max_request_tokens: int = MAX_REQUEST_TOKENS,
        counter: TokenCounter | None = None,
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.max_request_tokens = check_int("max_request_tokens", max_request_tokens)
        self._counter = counter
        self._items: list[Item] = []
        self._tokens = 0

    @property
    def pending(self) -> int:
        """Inputs added but not yet returned in a request."""
        return len(self._items)

    def _count_pending(self) -> None:
        # The bounds crossed the limit: count the waiting items to know whether they really do.
        if self._counter is None or all(item.exact for item in self._items):
            return
        self._items = [item.counted(self._counter) for item in self._items]
        self._tokens = sum(item.tokens for item in self._items)

    def add(self, item: Item) -> list[PlannedRequest]:
        """Add the next input; returns the requests it completes (usually none or one)."""
        out: list[PlannedRequest] = []
        if self._items and self._tokens + item.tokens > self.max_request_tokens:
            self._count_pending()
            if self._counter is not None and not item.exact:
                item = item.counted(self._counter)
            if self._tokens + item.tokens > self.max_request_tokens:
                out.append(self._take())
        self._items.append(item)
        self._tokens += item.tokens
        while len(self._items) >= self.batch_size:
            head, self._items = self._items[: self.batch_size], self._items[self.batch_size :]
            self._tokens = sum(waiting.tokens for waiting in self._items)
            out.append(PlannedRequest.of(head))
        if self._tokens >= self.max_request_tokens:
            self._count_pending()
            if self._tokens >= self.max_request_tokens:
                out.append(self._take())
        return out

    def flush(self) -> PlannedRequest | None:
        """The last, partial request, if any inputs are pending."""
        return self._take() if self._items else None

    def _take(self) -> PlannedRequest:
        request = PlannedRequest(tuple(self._items), self._tokens)
        self._items = []
        self._tokens = 0
        return request
