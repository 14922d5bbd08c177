"""Batches in the async facade: an anyio task group bounded by a capacity limiter.

The twin of :mod:`._batch_sync`: the same units, steps and accounting from :mod:`._jobs`, carried
out with ``await``. The event loop is never blocked for long: planning (reading the inputs,
counting tokens) runs in a worker thread, one unit at a time, and so does decoding large responses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from ._batch import BatchResult, PlannedRequest
from ._exceptions import DeadlineExceeded
from ._jobs import BatchFlow, Outcome, Rejected, Single, Unit, bisection_steps, summary_steps
from ._operations import (
    EmbeddingRequest,
    EmbeddingsPayload,
    check_completion,
    completion_text,
    decode_embeddings,
    send_embeddings_async,
)
from ._policy import current_deadline, retry_observer
from ._progress import Progress
from ._tokens import TokenCounter

if TYPE_CHECKING:
    from ._async_client import AsyncResilientClient

__all__ = ["AsyncBatchStream"]

T = TypeVar("T")

# Bodies larger than this are decoded in a worker thread rather than on the event loop.
_DECODE_OFF_LOOP_BYTES = 256 * 1024


class AsyncBatchStream(Generic[T]):
    """The outcomes of an async batch, in the order they finish.

    Use as ``async with client.iter_embed_batch(texts) as stream: async for index, outcome in
    stream: ...``; then :meth:`result` gives the accounting. The batch runs in a task group that
    lives exactly as long as the ``async with`` block: leaving it early cancels the rest.
    """

    def __init__(
        self,
        units: Iterator[Unit],
        execute: Callable[[Any], Awaitable[list[Outcome]]],
        flow: BatchFlow[T],
        progress: Progress,
    ) -> None:
        self._units = units
        self._execute = execute
        self._flow = flow
        self._progress = progress
        self._task_group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[list[Outcome]] | None = None
        self._buffer: list[Outcome] = []
        self._finished = False

    async def __aenter__(self) -> AsyncBatchStream[T]:
        if self._task_group is not None:
            raise RuntimeError("a batch stream can be entered only once")
        limit = self._flow.adaptive.maximum
        send, self._receive = anyio.create_memory_object_stream[list[Outcome]](limit)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._produce, send)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        assert self._receive is not None
        self._task_group.cancel_scope.cancel()  # a no-op when everything has finished
        self._receive.close()
        self._progress.close()
        return await self._task_group.__aexit__(exc_type, exc, traceback)

    def __aiter__(self) -> AsyncBatchStream[T]:
        return self

    async def __anext__(self) -> Outcome:
        if self._receive is None:
            raise RuntimeError("use the batch stream inside 'async with'")
        while not self._buffer:
            try:
                outcomes = await self._receive.receive()
            except anyio.EndOfStream:
                self._finished = True
                raise StopAsyncIteration from None
            self._progress.advance(len(outcomes), self._flow.accountant.total)
            self._buffer = outcomes[::-1]
        return self._buffer.pop()

    def result(self) -> BatchResult[T]:
        """The accounting of the whole batch.

        Raises:
            RuntimeError: the stream was not consumed to the end.
        """
        if not self._finished:
            raise RuntimeError("iterate the batch to the end before asking for its result")
        return self._flow.result()

    async def _produce(self, send: MemoryObjectSendStream[list[Outcome]]) -> None:
        flow = self._flow
        limiter = anyio.CapacityLimiter(flow.adaptive.limit)
        async with send, anyio.create_task_group() as workers:
            while True:
                # Planning reads the user's iterable and counts tokens: CPU work proportional to
                # the batch, done in a worker thread so the event loop stays responsive.
                unit = await anyio.to_thread.run_sync(next, self._units, None)
                if unit is None:
                    break
                if isinstance(unit, Rejected):
                    await send.send([flow.reject(unit)])
                elif flow.fatal is not None:
                    await send.send(flow.fail_unsent(unit))
                else:
                    borrower = object()
                    await limiter.acquire_on_behalf_of(borrower)
                    workers.start_soon(self._run_one, unit, limiter, borrower, send.clone())

    async def _run_one(
        self,
        unit: PlannedRequest | Single,
        limiter: anyio.CapacityLimiter,
        borrower: object,
        send: MemoryObjectSendStream[list[Outcome]],
    ) -> None:
        async with send:
            retry_observer.set(self._flow.observe_retry)  # this task's context only
            try:
                outcomes = await self._execute(unit)
            finally:
                limiter.release_on_behalf_of(borrower)
                limiter.total_tokens = self._flow.adaptive.limit
            await send.send(outcomes)


async def drain(stream: AsyncBatchStream[T]) -> BatchResult[T]:
    async with stream:
        async for _ in stream:
            pass
    return stream.result()


# -- units of work -----------------------------------------------------------------------------


async def _wait_for_budget(flow: BatchFlow[Any], tokens: int) -> None:
    delay = flow.wait_before_sending(tokens)
    if delay > 0:
        await anyio.sleep(delay)


async def _decode(body: bytes, expected: int) -> EmbeddingsPayload:
    if len(body) > _DECODE_OFF_LOOP_BYTES:
        return await anyio.to_thread.run_sync(decode_embeddings, body, expected)
    return decode_embeddings(body, expected)


async def embed_unit(
    client: AsyncResilientClient,
    request: PlannedRequest,
    flow: BatchFlow[list[float]],
    *,
    model: str,
    deadline: float | None,
    params: dict[str, Any],
) -> list[Outcome]:
    """Send one embeddings request; isolate bad inputs by bisection on a 400/422."""
    outcomes: list[Outcome] = []
    attempts: dict[int, int] = {}

    async def send(part: PlannedRequest) -> BaseException | None:
        await _wait_for_budget(flow, part.tokens)
        spec = EmbeddingRequest.build(part.texts, model=model, params=params)
        state = client._call_state("embeddings", deadline)

        try:
            body = await client._execute(state, send_embeddings_async, spec)
            payload = await _decode(body, len(part))
        except Exception as error:
            attempts[id(part)] = state.attempts
            flow.sent(ok=False)
            return error
        flow.sent(ok=True, prompt_tokens=payload.prompt_tokens, total_tokens=payload.total_tokens)
        for item, vector in zip(part.items, payload.vectors, strict=True):
            outcomes.append(flow.succeed(item.index, vector))
        return None

    steps = bisection_steps(request, flow)
    part = next(steps)
    while True:
        error = await send(part)
        try:
            part = steps.send(error)
        except StopIteration as finished:
            failed: list[tuple[PlannedRequest, BaseException]] = finished.value
            break
    for part, error in failed:
        outcomes.extend(flow.fail_request(part, error, attempts=attempts.get(id(part), 1)))
    return outcomes


async def summarize_unit(
    client: AsyncResilientClient,
    unit: Single,
    flow: BatchFlow[str],
    *,
    counter: TokenCounter,
    max_input_tokens: int,
    messages: Callable[[str, bool], list[dict[str, str]]],
    model: str | None,
    deadline: float | None,
) -> list[Outcome]:
    """Summarise one text, map-reducing it through chunk summaries when it is too long."""
    attempts = 0
    try:
        steps = summary_steps(unit.value, counter=counter, max_input_tokens=max_input_tokens)
        step = next(steps)
        while True:
            await _wait_for_budget(flow, counter.count(step.text))
            state = client._call_state("chat.completions", deadline)
            chosen = model or client.chat_model
            prompt = messages(step.text, step.combine)

            async def create(
                official: AsyncOpenAI, prompt: Any = prompt, chosen: str = chosen
            ) -> Any:
                return check_completion(
                    await official.chat.completions.create(model=chosen, messages=prompt)
                )

            try:
                completion = cast(ChatCompletion, await client._execute(state, create))
            except Exception:
                flow.sent(ok=False)
                raise
            finally:
                attempts += state.attempts
            usage = completion.usage
            flow.sent(
                ok=True,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                total_tokens=usage.total_tokens if usage else 0,
            )
            try:
                step = steps.send(completion_text(completion))
            except StopIteration as finished:
                return [flow.succeed(unit.index, finished.value)]
    except Exception as error:
        return [flow.fail(unit.index, error, attempts=attempts, item=unit.value)]


async def map_unit(
    fn: Callable[[Any], Awaitable[Any]],
    unit: Single,
    flow: BatchFlow[Any],
    *,
    deadline_per_item: float | None,
) -> list[Outcome]:
    """Await ``fn(item)`` within the per-item deadline (an anyio cancel scope)."""
    limit = math.inf if deadline_per_item is None else deadline_per_item
    started = anyio.current_time()
    try:
        with anyio.fail_after(limit):
            if deadline_per_item is not None:
                # Calls made through resilient_llm inside fn see the same budget.
                current_deadline.set(time.monotonic() + deadline_per_item)
            value = await fn(unit.value)
    except TimeoutError as error:
        if isinstance(error, DeadlineExceeded) or deadline_per_item is None:
            return [flow.fail(unit.index, error, attempts=1, item=unit.value)]
        elapsed = anyio.current_time() - started
        exceeded = DeadlineExceeded(
            "map item", deadline=deadline_per_item, elapsed=elapsed, attempts=1
        )
        exceeded.__cause__ = error
        return [flow.fail(unit.index, exceeded, attempts=1, item=unit.value)]
    except Exception as error:
        return [flow.fail(unit.index, error, attempts=1, item=unit.value)]
    flow.adaptive.on_success()
    return [flow.succeed(unit.index, value)]
