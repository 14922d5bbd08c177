"""Jobs: a batch described once for both facades, from its validated options. No I/O.

A job reads the user's inputs into units (:meth:`Job.prepare` turns raw inputs into units: that
is the CPU work the async driver may hand to a worker thread in chunks), makes the program of
each unit (:mod:`.programs`), and owns the batch's :class:`~.flow.BatchState` and progress.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sized
from typing import Any, Generic, TypeVar

from .._config import BatchOptions
from .._endpoints import ChatCall, EmbeddingRequest, EmbeddingsCall
from .._exceptions import InvalidInput
from .._inputs import MAX_EMBEDDING_INPUT_TOKENS, summary_messages, text_problem
from .._limits import LocalRateLimiter
from .._progress import Progress
from .._tokens import get_token_counter
from .bisection import PROBE_TEXT
from .chunking import SummaryStep
from .flow import BatchState
from .planning import (
    MAX_REQUEST_TOKENS,
    Item,
    PlannedRequest,
    RequestPlanner,
    prepare_item,
    rate_cost,
)
from .programs import Program, Rejected, Single, Unit, embed_program, map_program, summary_program

__all__ = ["EmbedJob", "Job", "MapJob", "SummaryJob"]

T = TypeVar("T")

# Above this many characters in a chunk of raw inputs, preparing it is worth a worker thread.
_HEAVY_CHARS = 64 * 1024


def _batch_limiters(options: BatchOptions) -> tuple[Any, ...]:
    # Always one of the batch's own, even without a budget: a 429's Retry-After then pauses
    # every worker of the batch, not just the one that met it.
    limiters: list[Any] = [
        LocalRateLimiter(
            requests_per_minute=options.requests_per_minute,
            tokens_per_minute=options.tokens_per_minute,
        )
    ]
    if options.rate_limiter is not None:
        limiters.append(options.rate_limiter)
    return tuple(limiters)


class Job(Generic[T]):
    """What both drivers need to run one batch."""

    operation = "batch"

    def __init__(
        self, source: object, options: BatchOptions, *, keep_values: bool, base_url: str
    ) -> None:
        self.options = options
        self.state: BatchState[T] = BatchState(
            keep_values=keep_values,
            max_concurrency=options.max_concurrency,
            base_url=base_url,
            limiters=_batch_limiters(options),
            operation=self.operation,
        )
        self.progress = Progress(
            enabled=options.progress,
            on_progress=options.on_progress,
            total=len(source) if isinstance(source, Sized) else None,
            description=self.operation,
        )

    def prepare(self, raws: list[object]) -> list[Unit]:
        """Turn the next raw inputs into units (CPU work, no I/O)."""
        raise NotImplementedError

    def finish(self) -> list[Unit]:
        """The units left once every input was read."""
        return []

    def heavy(self, raws: list[object]) -> bool:
        """Whether preparing ``raws`` is worth a worker thread (for an event loop)."""
        return False

    def program(self, unit: PlannedRequest | Single) -> Program:
        raise NotImplementedError

    def reject(self, unit: Rejected) -> list[Any]:
        return [self.state.reject(unit.index, unit.error, unit.raw)]


class EmbedJob(Job[list[float]]):
    """``embed_batch``: inputs grouped into requests, each split further when refused."""

    operation = "embed_batch"

    def __init__(
        self, source: object, options: BatchOptions, *, keep_values: bool, base_url: str
    ) -> None:
        super().__init__(source, options, keep_values=keep_values, base_url=base_url)
        self.params = dict(options.endpoint_params)
        # Bad parameters fail now, before any input is read.
        EmbeddingRequest.build([PROBE_TEXT], model=options.model, params=self.params)
        self.counter = get_token_counter(options.model)
        self.planner = RequestPlanner(
            batch_size=options.batch_size,
            max_request_tokens=MAX_REQUEST_TOKENS,
            counter=self.counter,
        )
        self._probe = functools.partial(self._call, [Item(-1, PROBE_TEXT, 1)])

    def heavy(self, raws: list[object]) -> bool:
        return sum(len(raw) for raw in raws if isinstance(raw, str)) > _HEAVY_CHARS

    def prepare(self, raws: list[object]) -> list[Unit]:
        units: list[Unit] = []
        limit = self.state.size_limit
        if limit is not None and limit < self.planner.batch_size:
            self.planner.batch_size = limit
        for raw in raws:
            index = self.state.accountant.expect(1)
            try:
                item = prepare_item(
                    index,
                    raw,
                    counter=self.counter,
                    max_item_tokens=MAX_EMBEDDING_INPUT_TOKENS,
                    too_long=self.options.too_long,
                )
            except InvalidInput as error:
                units.append(Rejected(index, error, raw))
                continue
            units.extend(self.planner.add(item))
        return units

    def finish(self) -> list[Unit]:
        last = self.planner.flush()
        return [] if last is None else [last]

    def _call(self, items: list[Item] | tuple[Item, ...]) -> EmbeddingsCall:
        texts = [item.text for item in items]
        request = EmbeddingRequest.build(texts, model=self.options.model, params=self.params)
        return EmbeddingsCall(request, tokens=rate_cost(items))

    def program(self, unit: PlannedRequest | Single) -> Program:
        assert isinstance(unit, PlannedRequest)
        return embed_program(
            unit,
            state=self.state,
            make_call=lambda part: self._call(part.items),
            probe=self._probe,
        )


class SummaryJob(Job[str]):
    """``summarize_batch``: one chat completion per text, map-reduced when too long."""

    operation = "summarize_batch"

    def __init__(
        self, source: object, options: BatchOptions, *, keep_values: bool, base_url: str
    ) -> None:
        super().__init__(source, options, keep_values=keep_values, base_url=base_url)
        summary_messages("check", options.instructions, options.max_words)  # fail now
        self.counter = get_token_counter(options.model)

    def heavy(self, raws: list[object]) -> bool:
        return False  # tokens are counted in the program, only for long texts

    def prepare(self, raws: list[object]) -> list[Unit]:
        units: list[Unit] = []
        for raw in raws:
            index = self.state.accountant.expect(1)
            problem = text_problem(raw)
            if problem is None:
                units.append(Single(index, raw))
            else:
                units.append(Rejected(index, InvalidInput(problem), raw))
        return units

    def _call(self, step: SummaryStep) -> ChatCall:
        options = self.options
        messages = summary_messages(
            step.text, options.instructions, options.max_words, combine=step.combine
        )
        return ChatCall.of({"model": options.model, "messages": messages}, "text")

    def program(self, unit: PlannedRequest | Single) -> Program:
        assert isinstance(unit, Single)
        return summary_program(
            unit,
            state=self.state,
            counter=self.counter,
            max_input_tokens=self.options.max_input_tokens,
            make_call=self._call,
        )


class MapJob(Job[Any]):
    """``map``: the user's function on each item; it decides what is valid."""

    operation = "map"

    def __init__(
        self,
        source: object,
        options: BatchOptions,
        *,
        fn: Callable[[Any], Any],
        keep_values: bool,
        base_url: str,
    ) -> None:
        super().__init__(source, options, keep_values=keep_values, base_url=base_url)
        self.fn = fn

    def prepare(self, raws: list[object]) -> list[Unit]:
        first = self.state.accountant.expect(len(raws))
        return [Single(first + offset, raw) for offset, raw in enumerate(raws)]

    def program(self, unit: PlannedRequest | Single) -> Program:
        assert isinstance(unit, Single)
        return map_program(unit, state=self.state)
