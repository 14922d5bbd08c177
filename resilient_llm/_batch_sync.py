"""Batches in the sync facade: a bounded pool of threads, each with its own official client.

Only the waiting and the I/O live here; what to send, how to split a rejected request, and how
every input is accounted for come from :mod:`._jobs` and :mod:`._batch`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from openai import OpenAI
from openai.types.chat import ChatCompletion

from ._batch import BatchResult, PlannedRequest
from ._jobs import BatchFlow, Outcome, Rejected, Single, Unit, bisection_steps, summary_steps
from ._operations import (
    EmbeddingRequest,
    check_completion,
    completion_text,
    decode_embeddings,
    send_embeddings,
)
from ._policy import current_cancel, current_deadline, retry_observer
from ._progress import Progress
from ._tokens import TokenCounter

if TYPE_CHECKING:
    from ._client import ResilientClient

__all__ = ["BatchStream", "WorkerThreads", "run_units"]

logger = logging.getLogger("resilient_llm")

T = TypeVar("T")

# How often the consuming thread wakes while it waits for workers, so Ctrl-C is seen promptly.
_POLL_SECONDS = 0.1


class BatchCancelled(Exception):
    """Internal: the batch was abandoned (Ctrl-C, an early ``break``); workers stop."""


def cancellable_sleep(seconds: float) -> None:
    """Sleep, but wake at once if the current batch is cancelled."""
    cancel = current_cancel.get()
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise BatchCancelled


class BatchStream(Generic[T]):
    """The outcomes of a batch, in the order they finish.

    Iterate it for ``(index, value)`` and ``(index, ItemFailure)`` pairs; after the last one,
    :meth:`result` gives the accounting. Use it as a context manager (or exhaust it): leaving
    early cancels what has not started and stops the workers.
    """

    def __init__(self, outcomes: Iterator[Outcome], flow: BatchFlow[T], progress: Progress):
        self._outcomes = outcomes
        self._flow = flow
        self._progress = progress
        self._finished = False

    def __iter__(self) -> BatchStream[T]:
        return self

    def __next__(self) -> Outcome:
        try:
            return next(self._outcomes)
        except StopIteration:
            self._finished = True
            self._progress.close()
            raise

    def close(self) -> None:
        """Stop the batch: nothing more is sent; requests in flight are abandoned."""
        close = getattr(self._outcomes, "close", None)
        if close is not None:
            close()
        self._progress.close()

    def result(self) -> BatchResult[T]:
        """The accounting of the whole batch (values only for ``embed_batch``-style calls).

        Raises:
            RuntimeError: the stream was not consumed to the end.
        """
        if not self._finished:
            raise RuntimeError("iterate the batch to the end before asking for its result")
        return self._flow.result()

    def __enter__(self) -> BatchStream[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _work(
    execute: Callable[[Any], list[Outcome]],
    unit: PlannedRequest | Single,
    flow: BatchFlow[Any],
    cancel: threading.Event,
) -> list[Outcome]:
    def run() -> list[Outcome]:
        retry_observer.set(flow.observe_retry)
        current_cancel.set(cancel)
        return execute(unit)

    try:
        # A fresh context per unit: the worker thread is reused and must not leak settings.
        return contextvars.Context().run(run)
    except BatchCancelled:
        return []
    except BaseException:
        logger.exception("batch worker failed unexpectedly on %r", unit)
        raise


class WorkerThreads:
    """A client's batch threads, kept between batches.

    Each thread keeps its own official client, so its connections are reused by the next batch
    instead of being dialled again. A batch that asks for more concurrency than the client's
    default gets threads of its own for its duration.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._shared: ThreadPoolExecutor | None = None

    def _shared_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._shared is None:
                self._shared = ThreadPoolExecutor(
                    max_workers=self._size, thread_name_prefix="resilient_llm-batch"
                )
            return self._shared

    @contextlib.contextmanager
    def lease(self, workers: int) -> Iterator[ThreadPoolExecutor]:
        if workers <= self._size:
            yield self._shared_pool()
            return
        own = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resilient_llm-batch")
        try:
            yield own
        finally:
            own.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            shared.shutdown(wait=False, cancel_futures=True)


def run_units(
    units: Iterator[Unit],
    execute: Callable[[Any], list[Outcome]],
    flow: BatchFlow[Any],
    progress: Progress,
    workers: WorkerThreads,
) -> Iterator[Outcome]:
    """Run units on at most ``flow.adaptive.limit`` threads; yield outcomes as they finish.

    Reads ``units`` lazily: no more than the concurrency bound of units is held at once.
    """
    with workers.lease(flow.adaptive.maximum) as pool:
        yield from _run_on(pool, units, execute, flow, progress)


def _run_on(
    pool: ThreadPoolExecutor,
    units: Iterator[Unit],
    execute: Callable[[Any], list[Outcome]],
    flow: BatchFlow[Any],
    progress: Progress,
) -> Iterator[Outcome]:
    cancel = threading.Event()
    in_flight: set[Future[list[Outcome]]] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) < flow.adaptive.limit:
                unit = next(units, None)
                if unit is None:
                    exhausted = True
                elif isinstance(unit, Rejected):
                    outcome = flow.reject(unit)
                    progress.advance(1, flow.accountant.total)
                    yield outcome
                elif flow.fatal is not None:
                    outcomes = flow.fail_unsent(unit)
                    progress.advance(len(outcomes), flow.accountant.total)
                    yield from outcomes
                else:
                    in_flight.add(pool.submit(_work, execute, unit, flow, cancel))
            if not in_flight:
                if exhausted:
                    break
                continue
            done, in_flight = wait(in_flight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                outcomes = future.result()
                progress.advance(len(outcomes), flow.accountant.total)
                yield from outcomes
    finally:
        # On Ctrl-C or an early exit, do not wait for requests in flight: they see ``cancel``
        # between socket reads and stop within a fraction of a second on their own.
        cancel.set()
        for future in in_flight:
            future.cancel()


# -- units of work -----------------------------------------------------------------------------


def _wait_for_budget(flow: BatchFlow[Any], tokens: int) -> None:
    delay = flow.wait_before_sending(tokens)
    if delay > 0:
        cancellable_sleep(delay)


def embed_unit(
    client: ResilientClient,
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

    def send(part: PlannedRequest) -> BaseException | None:
        _wait_for_budget(flow, part.tokens)
        spec = EmbeddingRequest.build(part.texts, model=model, params=params)
        state = client._call_state("embeddings", deadline)

        try:
            payload = decode_embeddings(client._execute(state, send_embeddings, spec), len(part))
        except BatchCancelled:
            raise
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
        error = send(part)
        try:
            part = steps.send(error)
        except StopIteration as finished:
            failed: list[tuple[PlannedRequest, BaseException]] = finished.value
            break
    for part, error in failed:
        outcomes.extend(flow.fail_request(part, error, attempts=attempts.get(id(part), 1)))
    return outcomes


def summarize_unit(
    client: ResilientClient,
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
            _wait_for_budget(flow, counter.count(step.text))
            state = client._call_state("chat.completions", deadline)
            chosen = model or client.chat_model
            prompt = messages(step.text, step.combine)

            def create(official: OpenAI, prompt: Any = prompt, chosen: str = chosen) -> Any:
                return check_completion(
                    official.chat.completions.create(model=chosen, messages=prompt)
                )

            try:
                completion = cast(ChatCompletion, client._execute(state, create))
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
    except BatchCancelled:
        raise
    except Exception as error:
        return [flow.fail(unit.index, error, attempts=attempts, item=unit.value)]


def map_unit(
    fn: Callable[[Any], Any],
    unit: Single,
    flow: BatchFlow[Any],
    *,
    deadline_per_item: float | None,
) -> list[Outcome]:
    """Call ``fn(item)``; calls it makes through resilient_llm inherit the per-item deadline."""
    if deadline_per_item is not None:
        current_deadline.set(time.monotonic() + deadline_per_item)
    try:
        value = fn(unit.value)
    except BatchCancelled:
        raise
    except Exception as error:
        return [flow.fail(unit.index, error, attempts=1, item=unit.value)]
    flow.adaptive.on_success()
    return [flow.succeed(unit.index, value)]
