"""AsyncResilientClient: the async twin of ResilientClient, on anyio (asyncio and trio)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

import anyio
import tenacity
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from ._batch import BatchResult, PlannedRequest
from ._batch_async import AsyncBatchStream, drain, embed_unit, map_unit, summarize_unit
from ._config import check_deadline
from ._facade import UNSET, FacadeBase, log_hook_failure
from ._http import build_async_http_client
from ._jobs import Outcome, Single
from ._lifecycle import LoopClients
from ._operations import (
    EmbeddingRequest,
    check_completion,
    check_messages,
    completion_text,
    decode_embeddings,
    prompt_messages,
    send_embeddings_async,
    summary_messages,
)
from ._policy import AttemptDeadline, CallState, current_deadline, retrying_kwargs
from ._progress import ProgressCallback

__all__ = ["AsyncResilientClient"]

T = TypeVar("T")
P = ParamSpec("P")


async def _call_hook(hook: Callable[[Any], Any], details: object) -> None:
    try:
        outcome = hook(details)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log_hook_failure(hook)


class AsyncResilientClient(FacadeBase):
    """The async twin of :class:`ResilientClient`: same arguments, same methods, as coroutines.

    Each running event loop (asyncio or trio) gets its own official ``AsyncOpenAI``, which
    is only ever closed on that loop, so one module-level client can serve many consecutive
    ``asyncio.run`` calls, or many threads each running a loop. The deadline of a call is an anyio
    cancel scope: it holds even against a server that trickles bytes. Hooks may be sync or async.

    Example:
        >>> async with AsyncResilientClient(deadline=30) as client:  # doctest: +SKIP
        ...     vector = await client.embed("hello")
    """

    _clients: LoopClients[AsyncOpenAI]

    def _setup(self) -> None:
        self._clients = LoopClients(self._make_openai)

    def _make_openai(self) -> AsyncOpenAI:
        http_client = build_async_http_client(self.timeouts)
        if self._openai_factory is not None:
            made: AsyncOpenAI = self._adopt(self._openai_factory(http_client))
            return made
        return AsyncOpenAI(http_client=http_client, **self._openai_kwargs())

    @property
    def openai(self) -> AsyncOpenAI:
        """The official client of the running event loop (no retries of its own)."""
        return self._clients.get()

    # -- the retry loop ------------------------------------------------------------------

    async def _run(
        self,
        operation: str,
        fn: Callable[Concatenate[AsyncOpenAI, P], Awaitable[T]],
        deadline: float | None,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        state = self._call_state(operation, deadline)
        return await self._execute(state, fn, *args, **kwargs)

    async def _execute(
        self,
        state: CallState,
        fn: Callable[Concatenate[AsyncOpenAI, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        client = self._clients.get()

        async def attempt() -> T:
            state.attempts += 1
            remaining = state.remaining()
            token = current_deadline.set(state.deadline_at)
            try:
                if remaining is None:
                    return await fn(client, *args, **kwargs)
                with anyio.CancelScope(deadline=anyio.current_time() + remaining):
                    return await fn(client, *args, **kwargs)
                raise AttemptDeadline(f"{state.operation}: cut off at the deadline")
            finally:
                current_deadline.reset(token)

        retrying = tenacity.AsyncRetrying(
            sleep=anyio.sleep,
            before_sleep=functools.partial(self._before_sleep, state),
            **retrying_kwargs(state),
        )
        try:
            result: T = await retrying(attempt)
        except BaseException as error:
            await self._after_call(state, error)
            raise
        await self._after_call(state, None)
        return result

    async def _before_sleep(self, state: CallState, retry_state: tenacity.RetryCallState) -> None:
        details = self._retry_details(state, retry_state)
        if details is not None and self._on_retry is not None:
            await _call_hook(self._on_retry, details)

    async def _after_call(self, state: CallState, error: BaseException | None) -> None:
        details = self._finished(state, error)
        if details is not None and self._on_call is not None:
            with anyio.CancelScope(shield=True):
                await _call_hook(self._on_call, details)

    # -- endpoints -----------------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """One chat completion, with retries and the deadline; returns the official type."""
        checked = check_messages(messages)
        chosen = model or self.chat_model

        async def create(client: AsyncOpenAI) -> ChatCompletion:
            return check_completion(
                await client.chat.completions.create(
                    model=chosen, messages=cast(Any, checked), **params
                )
            )

        return await self._run("chat.completions", create, deadline)

    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> str:
        """Send ``prompt`` (and an optional ``system`` message); return the reply's text."""
        messages = prompt_messages(prompt, system)
        completion = await self.chat(messages, model=model, deadline=deadline, **params)
        return completion_text(completion)

    async def summarize(
        self,
        text: str,
        *,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        deadline: float | None = None,
    ) -> str:
        """Summarise ``text``; ``instructions`` replace the default summary instructions."""
        messages = summary_messages(text, instructions, max_words)
        return completion_text(await self.chat(messages, model=model, deadline=deadline))

    @overload
    async def embed(
        self, texts: str, *, model: str | None = ..., deadline: float | None = ..., **params: Any
    ) -> list[float]: ...

    @overload
    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        **params: Any,
    ) -> list[list[float]]: ...

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> list[float] | list[list[float]]:
        """Embed one text (returns one vector) or a sequence of texts in one request (in order)."""
        request = EmbeddingRequest.build(texts, model=model or self.embedding_model, params=params)

        body = await self._run("embeddings", send_embeddings_async, deadline, request)
        vectors = decode_embeddings(body, len(request.inputs)).vectors
        return vectors[0] if request.single else vectors

    async def call(
        self,
        fn: Callable[Concatenate[AsyncOpenAI, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(openai_client, *args, **kwargs)`` with the client's retries and deadline.

        The escape hatch for any endpoint. A ``deadline=`` keyword is taken by this method.
        """
        deadline = cast("float | None", kwargs.pop("deadline", UNSET))
        operation = getattr(fn, "__qualname__", "call")
        return await self._run(operation, fn, deadline, *args, **kwargs)

    # -- batches -------------------------------------------------------------------------

    def iter_embed_batch(
        self,
        texts: Iterable[object],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        too_long: str = "fail",
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        deadline: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> AsyncBatchStream[list[float]]:
        """Embed any iterable in bounded concurrent requests; stream outcomes as they finish.

        Use as ``async with client.iter_embed_batch(texts) as stream: async for index, outcome
        in stream: ...``. See :meth:`ResilientClient.embed_batch` for the arguments.
        """
        return self._embed_stream(
            texts,
            keep_values=False,
            model=model,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            too_long=too_long,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            deadline=deadline,
            progress=progress,
            on_progress=on_progress,
            params=params,
        )

    async def embed_batch(
        self,
        texts: Iterable[object],
        *,
        model: str | None = None,
        batch_size: int | None = None,
        max_concurrency: int | None = None,
        too_long: str = "fail",
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        deadline: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> BatchResult[list[float]]:
        """Embed many texts: bounded, ordered, every input a success or a recorded failure.

        See :meth:`ResilientClient.embed_batch` for the arguments.
        """
        stream = self._embed_stream(
            texts,
            keep_values=True,
            model=model,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            too_long=too_long,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            deadline=deadline,
            progress=progress,
            on_progress=on_progress,
            params=params,
        )
        return await drain(stream)

    def _embed_stream(
        self,
        texts: Iterable[object],
        *,
        keep_values: bool,
        deadline: float | None,
        params: dict[str, Any],
        **options: Any,
    ) -> AsyncBatchStream[list[float]]:
        check_deadline(deadline)
        flow, units, bar, model = self._embedding_job(texts, keep_values=keep_values, **options)
        EmbeddingRequest.build(["check"], model=model, params=params)  # bad params fail now

        async def execute(request: PlannedRequest) -> list[Outcome]:
            return await embed_unit(
                self, request, flow, model=model, deadline=deadline, params=params
            )

        return AsyncBatchStream(units, execute, flow, bar)

    def iter_summarize_batch(
        self,
        texts: Iterable[object],
        *,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        max_input_tokens: int | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        deadline: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> AsyncBatchStream[str]:
        """Summarise any iterable; stream ``(index, summary | ItemFailure)`` as they finish."""
        return self._summary_stream(
            texts,
            keep_values=False,
            instructions=instructions,
            max_words=max_words,
            model=model,
            max_input_tokens=max_input_tokens,
            max_concurrency=max_concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            deadline=deadline,
            progress=progress,
            on_progress=on_progress,
        )

    async def summarize_batch(
        self,
        texts: Iterable[object],
        *,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        max_input_tokens: int | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        deadline: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> BatchResult[str]:
        """Summarise many texts, one chat completion each (map-reduce for long ones)."""
        return await drain(
            self._summary_stream(
                texts,
                keep_values=True,
                instructions=instructions,
                max_words=max_words,
                model=model,
                max_input_tokens=max_input_tokens,
                max_concurrency=max_concurrency,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                deadline=deadline,
                progress=progress,
                on_progress=on_progress,
            )
        )

    def _summary_stream(
        self, texts: Iterable[object], *, deadline: float | None, **options: Any
    ) -> AsyncBatchStream[str]:
        check_deadline(deadline)
        job = self._summary_job(texts, **options)

        async def execute(unit: Single) -> list[Outcome]:
            return await summarize_unit(
                self,
                unit,
                job.flow,
                counter=job.counter,
                max_input_tokens=job.max_input_tokens,
                messages=job.messages,
                model=job.model,
                deadline=deadline,
            )

        return AsyncBatchStream(job.units, execute, job.flow, job.progress)

    async def map(
        self,
        fn: Callable[[Any], Awaitable[T]],
        items: Iterable[Any],
        *,
        max_concurrency: int | None = None,
        deadline_per_item: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> BatchResult[T]:
        """Await ``fn(item)`` for every item, at most ``max_concurrency`` at once, in order.

        ``fn`` is a coroutine function. Each item runs under ``deadline_per_item`` (a cancel
        scope); every item ends as a value or a recorded failure.
        """
        flow, units, bar, limit = self._map_job(
            fn,
            items,
            max_concurrency=max_concurrency,
            deadline_per_item=deadline_per_item,
            progress=progress,
            on_progress=on_progress,
        )

        async def execute(unit: Single) -> list[Outcome]:
            return await map_unit(fn, unit, flow, deadline_per_item=limit)

        return await drain(AsyncBatchStream(units, execute, flow, bar))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._clients.closed

    async def aclose(self) -> None:
        """Close every loop's official client, each on its own loop."""
        await self._clients.aclose()

    async def __aenter__(self) -> AsyncResilientClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
