"""Programs: one generator per kind of unit, that yields the calls to make and does all accounting.

A program plays tenacity's ``iter`` for a whole unit of a batch: it yields a call (an
:mod:`.._endpoints` call, or an :class:`ItemCall` for ``map``), receives a :class:`Reply`, decides
what comes next (split, probe, fail, succeed) and records every input of the unit exactly once in
the :class:`~.flow.BatchState`. It returns the unit's outcomes. The drivers (:mod:`.threads`,
:mod:`.tasks`) only carry calls out, so the sync and async facades behave the same.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from .._answers import EmbeddingsPayload, TextAnswer
from .._exceptions import InvalidInput, ResilientLLMError
from .._retry import ends_batch
from .._tokens import TokenCounter
from .bisection import is_input_rejection, size_refusal, smaller_size
from .chunking import SummaryStep, summary_steps
from .flow import BatchEnded, BatchState, Outcome
from .planning import PlannedRequest

__all__ = [
    "ItemCall",
    "Program",
    "Rejected",
    "Reply",
    "Single",
    "Unit",
    "embed_program",
    "map_program",
    "summary_program",
]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a call came back with: a value, or the error it failed with after its retries."""

    value: Any = None
    error: BaseException | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ItemCall:
    """``map``'s call: the user's function on one item (no retries of its own)."""

    item: Any
    operation: str = "map item"


@dataclass(frozen=True, slots=True)
class Single:
    """A unit of one input: a text to summarise, an item to map."""

    index: int
    value: Any


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that failed its checks: recorded as failed, never sent."""

    index: int
    error: InvalidInput
    raw: object


Unit = PlannedRequest | Single | Rejected
Program = Generator[Any, Reply, list[Outcome]]


def _unsent(request: PlannedRequest) -> list[tuple[int, object]]:
    return [(item.index, item.text) for item in request.items]


@dataclass(slots=True)
class _Split:
    """A request split in halves because it was rejected: did both halves then succeed?"""

    unanswered: int = 2
    ok: bool = True
    half: int = 0


def embed_program(
    request: PlannedRequest,
    *,
    state: BatchState[list[float]],
    make_call: Callable[[PlannedRequest], Any],
    probe: Callable[[], Any],
) -> Program:
    """Send one embeddings request; split it on a size refusal or down to the bad inputs.

    Parts are sent depth first, in input order. See :mod:`.bisection` for the judgments. A
    rejected request whose halves both succeed held no bad input: it was refused for its size
    in words that did not say so (OpenAI's own "'$.input' is invalid"), and the smaller size is
    kept as for a size refusal.
    """
    outcomes: list[Outcome] = []
    pending: list[tuple[PlannedRequest, _Split | None]] = [(request, None)]
    while pending:
        part, parent = pending.pop()
        if state.ended:
            outcomes += state.fail_unsent(_unsent(part))
            continue
        limit = state.size_limit
        if limit is not None and len(part) > limit:
            pending.extend((piece, parent) for piece in reversed(part.split(limit)))
            continue
        reply = yield make_call(part)
        error = reply.error
        if isinstance(error, BatchEnded):
            pending.append((part, parent))  # never sent: failed as unsent above
            continue
        if parent is not None:
            parent.unanswered -= 1
            parent.ok &= error is None
            if parent.unanswered == 0 and parent.ok:
                state.limit_size(parent.half)
        if error is None:
            payload: EmbeddingsPayload = reply.value
            state.proved()
            state.add_usage(payload.prompt_tokens, payload.total_tokens)
            for item, vector in zip(part.items, payload.vectors, strict=True):
                outcomes.append(state.succeed(item.index, vector))
            continue
        refusal = size_refusal(error)
        if refusal is not None and len(part) > 1:
            state.limit_size(smaller_size(len(part), refusal))
            pieces = part.split(state.size_limit or 1)
            pending.extend((piece, parent) for piece in reversed(pieces))
            continue
        if is_input_rejection(error) and not state.ended:
            if state.should_probe():
                answer = yield probe()
                if answer.error is None:
                    state.add_usage(answer.value.prompt_tokens, answer.value.total_tokens)
                elif is_input_rejection(answer.error) or ends_batch(answer.error):
                    # An input that cannot be the bad one is refused too: the request is.
                    state.end(error if is_input_rejection(answer.error) else answer.error)
            if not state.ended and len(part) > 1:
                state.accountant.count(bisections=1)
                halves = part.halves()
                split = _Split(half=max(len(half) for half in halves))
                pending.extend((half, split) for half in reversed(halves))
                continue
        outcomes += state.fail_request(part, error, attempts=reply.attempts)
    return outcomes


def summary_program(
    unit: Single,
    *,
    state: BatchState[str],
    counter: TokenCounter,
    max_input_tokens: int,
    make_call: Callable[[SummaryStep], Any],
) -> Program:
    """Summarise one text: one chat completion, or map-reduce through chunk summaries."""
    if state.ended:
        return state.fail_unsent([(unit.index, unit.value)])
    attempts = 0
    steps = summary_steps(unit.value, counter=counter, max_input_tokens=max_input_tokens)
    try:
        step = next(steps)
        while True:
            ending = state.ending_error
            if ending is not None:
                return [
                    state.fail(
                        unit.index,
                        ending,
                        attempts=attempts,
                        item=unit.value,
                        not_sent=attempts == 0,
                    )
                ]
            reply = yield make_call(step)
            attempts += reply.attempts
            if isinstance(reply.error, BatchEnded):
                continue  # never sent: failed with the batch's error above
            if reply.error is not None:
                return [state.fail_one(unit.index, reply.error, attempts=attempts, item=unit.value)]
            answer: TextAnswer = reply.value
            state.add_usage(answer.prompt_tokens, answer.total_tokens)
            step = steps.send(answer.text)
    except StopIteration as done:
        return [state.succeed(unit.index, done.value)]
    except ResilientLLMError as error:
        return [state.fail_one(unit.index, error, attempts=attempts, item=unit.value)]


def map_program(unit: Single, *, state: BatchState[Any]) -> Program:
    """Call the user's function on one item (its own calls retry as they were told to)."""
    if state.ended:
        return state.fail_unsent([(unit.index, unit.value)])
    reply = yield ItemCall(unit.value)
    ending = state.ending_error
    if isinstance(reply.error, BatchEnded) and ending is not None:
        return [
            state.fail(
                unit.index,
                ending,
                attempts=reply.attempts,
                item=unit.value,
                not_sent=reply.attempts == 0,
            )
        ]
    if reply.error is not None:
        return [
            state.fail_one(
                unit.index, reply.error, attempts=max(1, reply.attempts), item=unit.value
            )
        ]
    return [state.succeed(unit.index, reply.value)]
