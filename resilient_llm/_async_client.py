"""AsyncResilientClient: the async twin of ResilientClient, on anyio (asyncio and trio)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

import anyio
import tenacity
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ._batch.flow import BatchEnded, ItemSink
from ._batch.jobs import Job, MapJob
from ._batch.programs import ItemCall, Reply
from ._batch.results import BatchResult
from ._batch.streams import AsyncBatchStream
from ._batch.tasks import AsyncExecute, Slots
from ._call import CallState
from ._closing import AsyncClosing
from ._context import scoped
from ._endpoints import ChatCall, FunctionCall
from ._exceptions import DeadlineExceeded
from ._http import build_async_http_client
from ._inputs import check_messages, prompt_messages, summary_messages
from ._lifecycle import LoopClients
from ._limits import apause, areserve
from ._retry import AttemptDeadline
from ._settings import UNSET, ClientBase, log_hook_failure
from ._streams import AsyncResilientStream, Opened

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import EmbedBatchOptions, MapOptions, SummarizeBatchOptions

__all__ = ["AsyncResilientClient"]

T = TypeVar("T")
P = ParamSpec("P")

_NOTHING: Any = object()


async def _call_hook(hook: Callable[[Any], Any], details: object) -> None:
    try:
        outcome = hook(details)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log_hook_failure(hook)


class AsyncResilientClient(ClientBase[AsyncOpenAI], AsyncClosing):
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
            return self._adopt(self._openai_factory(http_client), http_client)
        return AsyncOpenAI(http_client=http_client, **self._openai_kwargs())

    @property
    def openai(self) -> AsyncOpenAI:
        """The official client of the running event loop (no retries of its own)."""
        return self._clients.get()

    # -- the retry loop ------------------------------------------------------------------

    async def _run(
        self, call: Any, state: CallState, slots: Slots | None = None, *, finish: bool = True
    ) -> Any:
        """Carry out ``call`` with retries, the deadline and the rate limiters.

        With ``finish=False`` a success is not reported yet: the caller reports it (a stream,
        when it ends).
        """
        official = self._clients.get()

        async def attempt() -> Any:
            value = _NOTHING
            remaining = state.remaining()
            with scoped(deadline_at=state.deadline_at):
                deadline = anyio.current_time() + remaining if remaining is not None else None
                with anyio.CancelScope(deadline=deadline if deadline is not None else float("inf")):
                    if slots is None:
                        answer = await self._send(call, official, state)
                    else:
                        async with slots.hold():
                            answer = await self._send(call, official, state)
                    value = await call.aread(answer)
            if value is _NOTHING:
                raise AttemptDeadline("the attempt was cut off at the deadline")
            if state.sink is not None:
                state.sink.succeeded()
            return value

        try:
            try:
                value = await attempt()
            except Exception as first:
                # The first failure: only now does the retry machinery come in.
                retrying = tenacity.AsyncRetrying(
                    sleep=anyio.sleep,
                    before_sleep=functools.partial(self._before_sleep, state),
                    **state.tenacity_kwargs(),
                )
                value = await retrying(state.areplay(first, attempt))
        except BaseException as error:
            await self._after_call(state, error)
            raise
        if finish:
            await self._after_call(state, None)
        return value

    def _stream(
        self, opened: Opened, state: CallState, *, text_only: bool
    ) -> AsyncResilientStream[Any]:
        return AsyncResilientStream(
            opened,
            on_end=functools.partial(self._after_call, state),
            **self._stream_options(state, text_only=text_only),
        )

    async def _open_stream(
        self, call: Any, deadline: float | None, *, text_only: bool
    ) -> AsyncResilientStream[Any]:
        state = self._call_state(call.operation, deadline, tokens=call.tokens)
        opened = await self._run(call, state, finish=False)
        return self._stream(opened, state, text_only=text_only)

    async def _send(self, call: Any, official: AsyncOpenAI, state: CallState) -> Any:
        """One attempt on the wire (in its slot, in a batch): paced, counted, sent."""
        if state.limiters:
            await self._pace(state)
        if state.sink is not None:
            state.sink.sent()
        state.attempts += 1
        try:
            return await call.asend(official, self._openai_factory is None)
        except Exception as error:
            if state.sink is not None:
                state.sink.refused(error)  # before the slot is given back
            pause = state.pause_for(error)
            if pause:
                for limiter in state.limiters:
                    await apause(limiter, pause)
            raise

    async def _pace(self, state: CallState) -> None:
        if not state.limiters:
            return
        wait = max([await areserve(limiter, state.tokens) for limiter in state.limiters])
        if wait > 0:
            state.check_pace(wait)
            await anyio.sleep(wait)

    async def _before_sleep(self, state: CallState, retry_state: tenacity.RetryCallState) -> None:
        details = state.retry_details(retry_state)
        if self._on_retry is not None:
            await _call_hook(self._on_retry, details)

    async def _after_call(
        self, state: CallState, error: BaseException | None, chunks: int | None = None
    ) -> None:
        details = self._finished(state, error, chunks)
        if details is not None and self._on_call is not None:
            with anyio.CancelScope(shield=True):
                await _call_hook(self._on_call, details)

    # -- endpoints -----------------------------------------------------------------------

    @overload
    async def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    async def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> AsyncResilientStream[ChatCompletionChunk]: ...

    async def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ChatCompletion | AsyncResilientStream[ChatCompletionChunk]:
        """One chat completion, with retries and the deadline; returns the official type.

        With ``stream=True``: an :class:`AsyncResilientStream` of ``ChatCompletionChunk``s (see
        :meth:`ResilientClient.chat`).
        """
        body = {"model": model or self.chat_model, "messages": check_messages(messages), **params}
        if stream:
            return await self._open_stream(ChatCall.of(body, "stream"), deadline, text_only=False)
        call = ChatCall.of(body)
        result: ChatCompletion = await self._run(call, self._call_state(call.operation, deadline))
        return result

    @overload
    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = ...,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> str: ...

    @overload
    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = ...,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> AsyncResilientStream[str]: ...

    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> str | AsyncResilientStream[str]:
        """Send ``prompt`` (and an optional ``system`` message); return the reply's text.

        With ``stream=True``: an :class:`AsyncResilientStream` of the text deltas (``str``).
        """
        body = {"model": model or self.chat_model, "messages": prompt_messages(prompt, system)}
        if stream:
            call = ChatCall.of(body | params, "stream")
            return await self._open_stream(call, deadline, text_only=True)
        text_call = ChatCall.of(body | params, "text")
        answer = await self._run(text_call, self._call_state(text_call.operation, deadline))
        return str(answer.text)

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
        call = ChatCall.of({"model": model or self.chat_model, "messages": messages}, "text")
        answer = await self._run(call, self._call_state(call.operation, deadline))
        return str(answer.text)

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
        """Embed one text (returns one vector) or a sequence of texts in one request (in order).

        See :meth:`ResilientClient.embed`.
        """
        call, single = self._embed_call(texts, model, params)
        state = self._call_state(call.operation, deadline, tokens=call.tokens)
        payload = await self._run(call, state)
        vectors: list[list[float]] = payload.vectors
        return vectors[0] if single else vectors

    async def call(
        self,
        fn: Callable[Concatenate[AsyncOpenAI, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(openai_client, *args, **kwargs)`` with the client's retries and deadline.

        The escape hatch for any endpoint. A ``deadline=`` keyword is taken by this method.
        """
        deadline = kwargs.pop("deadline", UNSET)
        call: FunctionCall[T] = FunctionCall(fn, args, kwargs)
        state = self._call_state(call.operation, deadline)  # type: ignore[arg-type]
        result = await self._run(call, state, finish=False)
        if isinstance(result, Opened):
            return self._stream(result, state, text_only=False)  # type: ignore[return-value]
        await self._after_call(state, None)
        return result  # type: ignore[no-any-return]

    # -- batches -------------------------------------------------------------------------

    def iter_embed_batch(
        self, texts: Iterable[object], **options: Unpack[EmbedBatchOptions]
    ) -> AsyncBatchStream[list[float]]:
        """Like :meth:`embed_batch`, streaming ``(index, vector | ItemFailure)`` as they finish.

        Use as ``async with client.iter_embed_batch(texts) as stream: async for index, outcome
        in stream: ...``.
        """
        return self._batch(self._embed_job(texts, dict(options), keep_values=False), texts)

    async def embed_batch(
        self, texts: Iterable[object], **options: Unpack[EmbedBatchOptions]
    ) -> BatchResult[list[float]]:
        """See :meth:`ResilientClient.embed_batch`."""
        job = self._embed_job(texts, dict(options), keep_values=True)
        return await self._batch(job, texts).collect()

    def iter_summarize_batch(
        self, texts: Iterable[object], **options: Unpack[SummarizeBatchOptions]
    ) -> AsyncBatchStream[str]:
        """Like :meth:`summarize_batch`, streaming ``(index, summary | ItemFailure)``."""
        return self._batch(self._summary_job(texts, dict(options), keep_values=False), texts)

    async def summarize_batch(
        self, texts: Iterable[object], **options: Unpack[SummarizeBatchOptions]
    ) -> BatchResult[str]:
        """See :meth:`ResilientClient.summarize_batch`."""
        job = self._summary_job(texts, dict(options), keep_values=True)
        return await self._batch(job, texts).collect()

    async def map(
        self,
        fn: Callable[[Any], Awaitable[T]],
        items: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> BatchResult[T]:
        """Await ``fn(item)`` for every item, at most ``max_concurrency`` at once, in order.

        Every item ends as a value or a recorded failure; ``deadline_per_item`` is an anyio
        cancel scope around each item.
        """
        job = self._map_job(fn, items, dict(options))
        result: BatchResult[T] = await self._batch(job, items).collect()
        return result

    def _batch(self, job: Job[T], source: Iterable[object]) -> AsyncBatchStream[T]:
        return AsyncBatchStream(job, source, self._executor(job))

    def _executor(self, job: Job[Any]) -> AsyncExecute:
        """The ``execute`` coroutine function the async driver runs ``job``'s calls with."""
        limiters = job.state.limiters
        deadline = job.options.deadline

        async def execute(call: Any, slots: Slots) -> Reply:
            if isinstance(call, ItemCall):
                assert isinstance(job, MapJob)
                return await self._run_item(job, call, slots)
            state = self._call_state(
                call.operation, deadline, tokens=call.tokens, sink=job.state, limiters=limiters
            )
            try:
                value = await self._run(call, state, slots)
            except Exception as error:
                return Reply(error=error, attempts=state.attempts)
            return Reply(value, attempts=state.attempts)

        return execute

    async def _run_item(self, job: MapJob, call: ItemCall, slots: Slots) -> Reply:
        if job.state.ended:
            return Reply(error=BatchEnded(), attempts=0)
        limit = job.options.deadline_per_item
        started = anyio.current_time()
        deadline_at = None if limit is None else time.monotonic() + limit
        sink = ItemSink(job.state)
        error: BaseException | None = None
        async with slots.hold():
            with scoped(deadline_at=deadline_at, sink=sink):
                try:
                    if limit is None:
                        value = await job.fn(call.item)
                    else:
                        with anyio.fail_after(limit):
                            value = await job.fn(call.item)
                except TimeoutError as timeout:
                    error = timeout
                    if not isinstance(timeout, DeadlineExceeded) and limit is not None:
                        error = DeadlineExceeded(
                            "map item",
                            deadline=limit,
                            elapsed=anyio.current_time() - started,
                            attempts=max(1, sink.requests),
                        )
                        error.__cause__ = timeout
                except Exception as failure:
                    error = failure
        if error is not None:
            return Reply(error=error, attempts=max(1, sink.requests))
        return Reply(value, attempts=max(1, sink.requests))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._clients.closed

    async def aclose(self) -> None:
        """Close every loop's official client, each on its own loop."""
        await self._clients.aclose()
