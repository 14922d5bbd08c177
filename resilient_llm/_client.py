"""ResilientClient: the synchronous facade. It waits and does I/O; decisions live in the core."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

import tenacity
from openai import OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ._batch.flow import BatchEnded, ItemSink
from ._batch.jobs import Job, MapJob
from ._batch.programs import ItemCall, Reply
from ._batch.results import BatchResult
from ._batch.streams import BatchStream
from ._batch.threads import (
    BatchCancelled,
    Execute,
    ThreadSlots,
    WorkerThreads,
    cancellable_sleep,
    run_threads,
)
from ._call import CallState
from ._closing import Closing
from ._context import current_scope, scoped
from ._endpoints import ChatCall, FunctionCall
from ._http import build_sync_http_client
from ._inputs import check_messages, prompt_messages, summary_messages
from ._lifecycle import ThreadClients
from ._settings import UNSET, ClientBase, log_hook_failure
from ._streams import Opened, ResilientStream

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._config import EmbedBatchOptions, MapOptions, SummarizeBatchOptions

__all__ = ["ResilientClient"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class ResilientClient(ClientBase[OpenAI], Closing):
    """A thread-safe client for OpenAI and compatible servers, safe by default.

    Every call has native per-attempt HTTP timeouts, a wall-clock ``deadline`` across attempts and
    back-off, and retries of transient failures (honouring ``Retry-After``). Each thread gets its
    own official ``OpenAI`` client, made on first use.

    Args:
        api_key: defaults to ``OPENAI_API_KEY``. Never shown in ``repr()``, logs or errors. With
            no key and a ``base_url`` of your own (vLLM, Ollama, a proxy), a placeholder is sent.
        base_url: defaults to ``OPENAI_BASE_URL``, then OpenAI's.
        organization: as for ``OpenAI``.
        project: as for ``OpenAI``.
        default_headers: extra headers on every request.
        chat_model: model for ``chat``, ``complete`` and ``summarize`` when none is given.
        embedding_model: model for ``embed`` when none is given.
        timeouts: per-attempt :class:`Timeouts`, or one number of seconds for all four.
        deadline: wall-clock seconds for one logical call, retries included (``None``: none).
        retry: the :class:`RetryPolicy`.
        max_concurrency: default bound for batch operations.
        rate_limiter: a :class:`RateLimiter` that paces every request this client sends.
        openai_factory: advanced: ``callable(http_client) -> OpenAI`` (Azure and others);
            it must build its client on the ``http_client`` it is given.
        on_retry: hook called with a :class:`RetryDetails` before each back-off sleep.
        on_call: hook called with a :class:`CallDetails` when each logical call ends.

    Example:
        >>> with ResilientClient(deadline=30) as client:  # doctest: +SKIP
        ...     vector = client.embed("hello")
    """

    _clients: ThreadClients[OpenAI]

    def _setup(self) -> None:
        self._clients = ThreadClients(self._make_openai)
        self._workers = WorkerThreads(2 * self.max_concurrency)

    def _make_openai(self) -> OpenAI:
        http_client = build_sync_http_client(self.timeouts)
        if self._openai_factory is not None:
            return self._adopt(self._openai_factory(http_client), http_client)
        return OpenAI(http_client=http_client, **self._openai_kwargs())

    @property
    def openai(self) -> OpenAI:
        """The official client of the current thread, for any endpoint (no retries of its own)."""
        return self._clients.get()

    # -- the retry loop ------------------------------------------------------------------

    def _run(
        self,
        call: Any,
        state: CallState,
        slots: ThreadSlots | None = None,
        *,
        finish: bool = True,
    ) -> Any:
        """Carry out ``call`` with retries, the deadline and the rate limiters.

        With ``finish=False`` a success is not reported yet: the caller reports it (a stream,
        when it ends).
        """
        official = self._clients.get()

        def attempt() -> Any:
            with scoped(deadline_at=state.deadline_at):
                if slots is None:
                    answer = self._send(call, official, state)
                else:
                    with slots.hold():
                        answer = self._send(call, official, state)
                    # The slot is free: give the GIL to the thread waiting for it, so that its
                    # request goes out before this answer is decoded.
                    time.sleep(0)
                # Off the wire: decoding no longer holds a slot another request could use.
                value = call.read(answer)
            if state.sink is not None:
                state.sink.succeeded()
            return value

        try:
            try:
                value = attempt()
            except Exception as first:
                # The first failure: only now does the retry machinery come in.
                retrying = tenacity.Retrying(
                    sleep=cancellable_sleep,
                    before_sleep=functools.partial(self._before_sleep, state),
                    **state.tenacity_kwargs(),
                )
                value = retrying(state.replay(first, attempt))
        except BaseException as error:
            self._after_call(state, error)
            raise
        if finish:
            self._after_call(state, None)
        return value

    def _send(self, call: Any, official: OpenAI, state: CallState) -> Any:
        """One attempt on the wire (in its slot, in a batch): paced, counted, sent."""
        if state.limiters:
            self._pace(state)
        if state.sink is not None:
            state.sink.sent()
        state.attempts += 1
        try:
            return call.send(official, self._openai_factory is None)
        except Exception as error:
            if state.sink is not None:
                state.sink.refused(error)  # before the slot is given back
            pause = state.pause_for(error)
            if pause:
                for limiter in state.limiters:
                    limiter.pause(pause)
            raise

    def _stream(self, opened: Opened, state: CallState, *, text_only: bool) -> ResilientStream[Any]:
        return ResilientStream(
            opened,
            on_end=functools.partial(self._after_call, state),
            **self._stream_options(state, text_only=text_only),
        )

    def _pace(self, state: CallState) -> None:
        if not state.limiters:
            return
        wait = max(limiter.reserve(state.tokens) for limiter in state.limiters)
        if wait > 0:
            state.check_pace(wait)
            cancellable_sleep(wait)

    def _before_sleep(self, state: CallState, retry_state: tenacity.RetryCallState) -> None:
        cancel = current_scope().cancel
        if cancel is not None and cancel.is_set():
            # The batch was abandoned and its requests cut: no retry, and nothing to report.
            raise BatchCancelled
        details = state.retry_details(retry_state)
        if self._on_retry is not None:
            try:
                self._on_retry(details)
            except Exception:
                log_hook_failure(self._on_retry)

    def _after_call(
        self, state: CallState, error: BaseException | None, chunks: int | None = None
    ) -> None:
        details = self._finished(state, error, chunks)
        if details is not None and self._on_call is not None:
            try:
                self._on_call(details)
            except Exception:
                log_hook_failure(self._on_call)

    # -- endpoints -----------------------------------------------------------------------

    @overload
    def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[False] = ...,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> ResilientStream[ChatCompletionChunk]: ...

    def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ChatCompletion | ResilientStream[ChatCompletionChunk]:
        """One chat completion, with retries and the deadline; returns the official type.

        With ``stream=True``: a :class:`ResilientStream` of official ``ChatCompletionChunk``s,
        retried until its first chunk, bounded by ``deadline`` to its last (SPEC §9). Unknown
        keyword arguments go to ``client.chat.completions.create`` unchanged.

        Raises:
            InvalidResponse: the answer has no choice (after retries).
        """
        body = {"model": model or self.chat_model, "messages": check_messages(messages), **params}
        if stream:
            return self._open_stream(ChatCall.of(body, "stream"), deadline, text_only=False)
        call = ChatCall.of(body)
        result: ChatCompletion = self._run(call, self._call_state(call.operation, deadline))
        return result

    def _open_stream(
        self, call: Any, deadline: float | None, *, text_only: bool
    ) -> ResilientStream[Any]:
        state = self._call_state(call.operation, deadline, tokens=call.tokens)
        opened = self._run(call, state, finish=False)
        return self._stream(opened, state, text_only=text_only)

    @overload
    def complete(
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
    def complete(
        self,
        prompt: str,
        *,
        system: str | None = ...,
        model: str | None = ...,
        deadline: float | None = ...,
        stream: Literal[True],
        **params: Any,
    ) -> ResilientStream[str]: ...

    def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
        stream: bool = False,
        **params: Any,
    ) -> str | ResilientStream[str]:
        """Send ``prompt`` (and an optional ``system`` message); return the reply's text.

        With ``stream=True``: a :class:`ResilientStream` of the text deltas (``str``).

        Raises:
            InvalidResponse: the answer has no text (retried first, unless it explains why:
                a refusal, a content filter, tool calls).
        """
        body = {"model": model or self.chat_model, "messages": prompt_messages(prompt, system)}
        if stream:
            return self._open_stream(ChatCall.of(body | params, "stream"), deadline, text_only=True)
        call = ChatCall.of(body | params, "text")
        return str(self._run(call, self._call_state(call.operation, deadline)).text)

    def summarize(
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
        return str(self._run(call, self._call_state(call.operation, deadline)).text)

    @overload
    def embed(
        self, texts: str, *, model: str | None = ..., deadline: float | None = ..., **params: Any
    ) -> list[float]: ...

    @overload
    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = ...,
        deadline: float | None = ...,
        **params: Any,
    ) -> list[list[float]]: ...

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> list[float] | list[list[float]]:
        """Embed one text (returns one vector) or a sequence of texts in one request (in order).

        Every text is checked as a batch checks it (type, blank, lone surrogates, 8,191 tokens);
        every answer is checked before a vector is returned. Unknown keyword arguments
        (``dimensions``, ``user``...) go to the endpoint.
        """
        call, single = self._embed_call(texts, model, params)
        payload = self._run(call, self._call_state(call.operation, deadline, tokens=call.tokens))
        vectors: list[list[float]] = payload.vectors
        return vectors[0] if single else vectors

    def call(
        self,
        fn: Callable[Concatenate[OpenAI, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(openai_client, *args, **kwargs)`` with the client's retries and deadline.

        The escape hatch for any endpoint. A ``deadline=`` keyword is taken by this method. A
        stream ``fn`` returns (``responses.create(stream=True)``, say) comes back as a
        :class:`ResilientStream` with the guarantees of ``chat(stream=True)``.
        """
        deadline = kwargs.pop("deadline", UNSET)
        call: FunctionCall[T] = FunctionCall(fn, args, kwargs)
        state = self._call_state(call.operation, deadline)  # type: ignore[arg-type]
        result = self._run(call, state, finish=False)
        if isinstance(result, Opened):
            return self._stream(result, state, text_only=False)  # type: ignore[return-value]
        self._after_call(state, None)
        return result  # type: ignore[no-any-return]

    # -- batches -------------------------------------------------------------------------

    def iter_embed_batch(
        self, texts: Iterable[object], **options: Unpack[EmbedBatchOptions]
    ) -> BatchStream[list[float]]:
        """Like :meth:`embed_batch`, streaming ``(index, vector | ItemFailure)`` as they finish.

        Holds only a bounded window of inputs, so a generator of millions of texts is fine. Use
        it as a context manager; after the last outcome, ``stream.result()`` gives the counts.
        """
        job = self._embed_job(texts, dict(options), keep_values=False)
        return self._batch(job, texts)

    def embed_batch(
        self, texts: Iterable[object], **options: Unpack[EmbedBatchOptions]
    ) -> BatchResult[list[float]]:
        """Embed many texts: bounded, ordered, every input a success or a recorded failure.

        Args:
            texts: any iterable of strings; non-strings and blank strings fail alone.
            **options: see :class:`~resilient_llm.EmbedBatchOptions`: ``model``,
                ``batch_size``, ``max_concurrency``, ``too_long``, ``requests_per_minute``,
                ``tokens_per_minute``, ``rate_limiter``, ``deadline``, ``progress``,
                ``on_progress``, ``dimensions``, ``user``...

        Returns:
            A :class:`BatchResult` with the vectors in input order.
        """
        job = self._embed_job(texts, dict(options), keep_values=True)
        return self._batch(job, texts).collect()

    def iter_summarize_batch(
        self, texts: Iterable[object], **options: Unpack[SummarizeBatchOptions]
    ) -> BatchStream[str]:
        """Like :meth:`summarize_batch`, streaming ``(index, summary | ItemFailure)``."""
        return self._batch(self._summary_job(texts, dict(options), keep_values=False), texts)

    def summarize_batch(
        self, texts: Iterable[object], **options: Unpack[SummarizeBatchOptions]
    ) -> BatchResult[str]:
        """Summarise many texts, one chat completion each, with the bounds of :meth:`embed_batch`.

        Texts longer than ``max_input_tokens`` (default 100,000) are split, each part
        summarised, and the part summaries summarised (map-reduce). Options: see
        :class:`~resilient_llm.SummarizeBatchOptions`.
        """
        job = self._summary_job(texts, dict(options), keep_values=True)
        return self._batch(job, texts).collect()

    def map(
        self, fn: Callable[[Any], T], items: Iterable[Any], **options: Unpack[MapOptions]
    ) -> BatchResult[T]:
        """Call ``fn(item)`` for every item on a bounded pool of threads, results in order.

        Every item ends as a value or a recorded failure. Calls that ``fn`` makes through
        resilient_llm clients inherit ``deadline_per_item`` and count in the batch's stats; other
        code in ``fn`` cannot be interrupted from outside its thread. Options: see
        :class:`~resilient_llm.MapOptions`.
        """
        job = self._map_job(fn, items, dict(options))
        result: BatchResult[T] = self._batch(job, items).collect()
        return result

    def _batch(self, job: Job[T], source: Iterable[object]) -> BatchStream[T]:
        return BatchStream(job, run_threads(job, source, self._executor(job), self._workers))

    def _executor(self, job: Job[Any]) -> Execute:
        """The ``execute`` callable the sync driver runs ``job``'s calls with."""
        limiters = job.state.limiters
        deadline = job.options.deadline

        def execute(call: Any, slots: ThreadSlots) -> Reply:
            if isinstance(call, ItemCall):
                assert isinstance(job, MapJob)
                return self._run_item(job, call, slots)
            state = self._call_state(
                call.operation, deadline, tokens=call.tokens, sink=job.state, limiters=limiters
            )
            try:
                value = self._run(call, state, slots)
            except BatchCancelled:
                raise
            except Exception as error:
                return Reply(error=error, attempts=state.attempts)
            return Reply(value, attempts=state.attempts)

        return execute

    def _run_item(self, job: MapJob, call: ItemCall, slots: ThreadSlots) -> Reply:
        if job.state.ended:
            return Reply(error=BatchEnded(), attempts=0)
        limit = job.options.deadline_per_item
        deadline_at = None if limit is None else time.monotonic() + limit
        sink = ItemSink(job.state)
        with slots.hold(), scoped(deadline_at=deadline_at, sink=sink):
            try:
                value = job.fn(call.item)
            except BatchCancelled:
                raise
            except Exception as error:
                return Reply(error=error, attempts=max(1, sink.requests))
        return Reply(value, attempts=max(1, sink.requests))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._clients.closed

    def close(self) -> None:
        """Close every thread's official client and its connections."""
        self._workers.close()
        self._clients.close()
