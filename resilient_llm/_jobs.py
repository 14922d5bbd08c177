"""Batch jobs described once for both shells. No I/O.

A batch turns its inputs, lazily, into *units* of work (one embeddings request of many inputs, one
text to summarise, one item to map). The shells run units concurrently and report what happened
to a :class:`BatchFlow`, which keeps the accounting, the adaptive concurrency target, the rate
budget and the batch-wide fatal error. Multi-step units are generators that yield what to send
and receive what came back (the shape of tenacity's ``iter``), so the sync and async shells only
carry the steps out:

- :func:`bisection_steps`: one embeddings request, split down to the bad input on a 400/422;
- :func:`summary_steps`: one text, map-reduced through chunk summaries when it is too long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import openai

from ._batch import (
    BatchAccountant,
    BatchResult,
    ItemFailure,
    PlannedRequest,
    RequestPlanner,
    TooLong,
    bisect_outcome,
    is_input_rejection,
    prepare_item,
    text_chunks,
)
from ._exceptions import InvalidInput, ResilientLLMError
from ._flow import AdaptiveLimit, RateBudget
from ._policy import RetryDetails, classify
from ._tokens import TokenCounter

__all__ = [
    "MAX_EMBEDDING_INPUT_TOKENS",
    "BatchFlow",
    "Outcome",
    "Rejected",
    "Single",
    "SummaryStep",
    "Unit",
    "bisection_steps",
    "embedding_units",
    "item_units",
    "summary_steps",
    "text_units",
]

T = TypeVar("T")

#: Per-input limit of OpenAI's embedding models.
MAX_EMBEDDING_INPUT_TOKENS = 8191

Outcome = tuple[int, Any]
"""``(index, value)`` for a success, ``(index, ItemFailure)`` for a failure."""


@dataclass(frozen=True, slots=True)
class Single:
    """A unit of one input: a text to summarise, an item to map."""

    index: int
    value: Any
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that failed its checks: recorded as failed, never sent."""

    index: int
    error: InvalidInput
    raw: object


Unit = PlannedRequest | Single | Rejected


def embedding_units(
    texts: Iterable[object],
    *,
    accountant: BatchAccountant[Any],
    counter: TokenCounter,
    batch_size: int,
    max_request_tokens: int,
    too_long: TooLong,
    max_item_tokens: int = MAX_EMBEDDING_INPUT_TOKENS,
) -> Iterator[Unit]:
    """Read ``texts`` lazily into embeddings requests within both API limits."""
    planner = RequestPlanner(batch_size=batch_size, max_request_tokens=max_request_tokens)
    for raw in texts:
        index = accountant.expect(1)
        try:
            item = prepare_item(
                index, raw, counter=counter, max_item_tokens=max_item_tokens, too_long=too_long
            )
        except InvalidInput as error:
            yield Rejected(index, error, raw)
            continue
        request = planner.add(item)
        if request is not None:
            yield request
    last = planner.flush()
    if last is not None:
        yield last


def text_units(
    texts: Iterable[object], *, accountant: BatchAccountant[Any], counter: TokenCounter
) -> Iterator[Single | Rejected]:
    """One unit per text to summarise; non-strings and blank strings are rejected."""
    for raw in texts:
        index = accountant.expect(1)
        if not isinstance(raw, str):
            hint = "; decode it first" if isinstance(raw, (bytes, bytearray)) else ""
            message = f"item {index}: expected str, got {type(raw).__name__}{hint}"
            yield Rejected(index, InvalidInput(message), raw)
        elif not raw.strip():
            yield Rejected(index, InvalidInput(f"item {index}: empty or whitespace-only"), raw)
        else:
            yield Single(index, raw, counter.count(raw))


def item_units(items: Iterable[object], *, accountant: BatchAccountant[Any]) -> Iterator[Single]:
    """One unit per item, for ``map``: the function decides what is valid."""
    for item in items:
        yield Single(accountant.expect(1), item)


def bisection_steps(
    request: PlannedRequest, flow: BatchFlow[Any]
) -> Generator[PlannedRequest, BaseException | None, list[tuple[PlannedRequest, BaseException]]]:
    """Send ``request``; on an input rejection, split it down to the bad inputs.

    Yields each request to send and receives its error (``None`` when it succeeded: the shell
    has recorded its values). Returns the requests whose items failed, with their errors.
    """
    error = yield request
    if error is None:
        return []
    if len(request) < 2 or not is_input_rejection(error):
        return [(request, error)]
    failed: list[tuple[PlannedRequest, BaseException]] = []
    to_split = [request]
    while to_split:
        parent = to_split.pop()
        left, right = parent.halves()
        flow.accountant.count_bisection()
        left_error = yield left
        right_error = yield right
        outcome = bisect_outcome(left, left_error, right, right_error)
        if outcome.fail_all is not None:
            # The error names no input: every other request of the batch would meet it too.
            flow.fatal = outcome.fail_all
            failed.append((parent, outcome.fail_all))
            continue
        to_split.extend(reversed(outcome.split))
        failed.extend(outcome.fail)
    return failed


@dataclass(frozen=True, slots=True)
class SummaryStep:
    """One chat completion of a summary job: ``combine`` merges partial summaries."""

    text: str
    combine: bool


def summary_steps(
    text: str, *, counter: TokenCounter, max_input_tokens: int
) -> Generator[SummaryStep, str, str]:
    """Summarise ``text``: directly, or map-reduce when it is over ``max_input_tokens``.

    Yields each text to summarise and receives its summary; returns the final summary.
    """
    if counter.count(text) <= max_input_tokens:
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


def _batch_fatal(error: BaseException) -> bool:
    """Errors that every further request of the batch would meet: stop sending."""
    if isinstance(
        error, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    ):
        return True
    verdict = classify(error)
    return verdict.rate_limited and not verdict.retryable  # insufficient_quota


class BatchFlow(Generic[T]):
    """State one batch shares between its workers: accounting and flow control. Thread-safe.

    Args:
        keep_values: keep values for :attr:`BatchResult.values` (off for the streaming forms).
        max_concurrency: the user's bound on requests in flight.
        requests_per_minute: optional client-side request budget.
        tokens_per_minute: optional client-side token budget.
    """

    def __init__(
        self,
        *,
        keep_values: bool,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accountant: BatchAccountant[T] = BatchAccountant(keep_values=keep_values)
        self.adaptive = AdaptiveLimit(max_concurrency)
        self.budget = RateBudget(requests_per_minute, tokens_per_minute)
        self.fatal: BaseException | None = None
        self._clock = clock
        self.started = clock()

    def observe_retry(self, details: RetryDetails) -> None:
        """Count a retry of one of this batch's calls; back off on 429s."""
        error = details.error
        rate_limited = details.status == 429
        self.accountant.count_retry(
            rate_limited=rate_limited, timeout=isinstance(error, openai.APITimeoutError)
        )
        if rate_limited:
            now = self._clock()
            self.adaptive.on_rate_limited(now)
            if details.sleep > 0:
                self.budget.penalize(details.sleep, now)

    def wait_before_sending(self, tokens: int) -> float:
        """Seconds to wait for the client-side rate budget before one request."""
        if not self.budget.limited:
            return 0.0
        return self.budget.reserve(tokens, self._clock())

    def sent(self, *, ok: bool, prompt_tokens: int = 0, total_tokens: int = 0) -> None:
        """One request finished (after its retries)."""
        self.accountant.count_request()
        if prompt_tokens or total_tokens:
            self.accountant.add_usage(prompt_tokens, total_tokens)
        if ok:
            self.adaptive.on_success()

    def succeed(self, index: int, value: T) -> Outcome:
        self.accountant.success(index, value)
        return (index, value)

    def fail(self, index: int, error: BaseException, *, attempts: int, item: object) -> Outcome:
        if self.fatal is None and _batch_fatal(error):
            self.fatal = error
        record: ItemFailure = self.accountant.failure(index, error, attempts=attempts, item=item)
        return (index, record)

    def fail_request(
        self, request: PlannedRequest, error: BaseException, *, attempts: int
    ) -> list[Outcome]:
        return [
            self.fail(item.index, error, attempts=attempts, item=item.text)
            for item in request.items
        ]

    def reject(self, unit: Rejected) -> Outcome:
        return self.fail(unit.index, unit.error, attempts=0, item=unit.raw)

    def fail_unsent(self, unit: PlannedRequest | Single) -> list[Outcome]:
        """Fail a unit without sending it: the batch already met a fatal error."""
        error = self.fatal
        assert error is not None
        if isinstance(unit, Single):
            return [self.fail(unit.index, error, attempts=0, item=unit.value)]
        return self.fail_request(unit, error, attempts=0)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def result(self) -> BatchResult[T]:
        return self.accountant.result(self.elapsed())
