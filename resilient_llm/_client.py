"""ResilientClient: the synchronous facade. It waits and does I/O; decisions live in the core."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

import tenacity
from openai import OpenAI
from openai.types.chat import ChatCompletion

from ._batch import BatchResult, PlannedRequest
from ._batch_sync import (
    BatchCancelled,
    BatchStream,
    WorkerThreads,
    cancellable_sleep,
    embed_unit,
    map_unit,
    run_units,
    summarize_unit,
)
from ._config import check_deadline
from ._facade import UNSET, FacadeBase, log_hook_failure
from ._http import build_sync_http_client
from ._jobs import Outcome, Single
from ._lifecycle import ThreadClients
from ._operations import (
    EmbeddingRequest,
    check_completion,
    check_messages,
    completion_text,
    decode_embeddings,
    prompt_messages,
    send_embeddings,
    summary_messages,
)
from ._policy import CallState, current_cancel, current_deadline, retrying_kwargs
from ._progress import ProgressCallback

__all__ = ["ResilientClient"]


def _drain(stream: BatchStream[T]) -> BatchResult[T]:
    with stream:
        for _ in stream:
            pass
        return stream.result()


T = TypeVar("T")
P = ParamSpec("P")


class ResilientClient(FacadeBase):
    """A thread-safe client for OpenAI and compatible servers, safe by default.

    Every call has native per-attempt HTTP timeouts, a wall-clock ``deadline`` across attempts and
    back-off, and retries of transient failures (honouring ``Retry-After``). Each thread gets its
    own official ``OpenAI`` client, made on first use.

    Args:
        api_key: defaults to ``OPENAI_API_KEY``. Never shown in ``repr()``, logs or errors.
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
        openai_factory: advanced: ``callable(http_client) -> OpenAI`` (Azure and others);
            it must pass ``http_client`` on to the client it builds.
        on_retry: hook called with a :class:`RetryDetails` before each back-off sleep.
        on_call: hook called with a :class:`CallDetails` when each logical call ends.

    Example:
        >>> with ResilientClient(deadline=30) as client:  # doctest: +SKIP
        ...     vector = client.embed("hello")
    """

    _clients: ThreadClients[OpenAI]

    def _setup(self) -> None:
        self._clients = ThreadClients(self._make_openai)
        self._workers = WorkerThreads(self.max_concurrency)

    def _make_openai(self) -> OpenAI:
        http_client = build_sync_http_client(self.timeouts)
        if self._openai_factory is not None:
            made: OpenAI = self._adopt(self._openai_factory(http_client))
            return made
        return OpenAI(http_client=http_client, **self._openai_kwargs())

    @property
    def openai(self) -> OpenAI:
        """The official client of the current thread, for any endpoint (no retries of its own)."""
        return self._clients.get()

    # -- the retry loop ------------------------------------------------------------------

    def _run(
        self,
        operation: str,
        fn: Callable[Concatenate[OpenAI, P], T],
        deadline: float | None,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        state = self._call_state(operation, deadline)
        return self._execute(state, fn, *args, **kwargs)

    def _execute(
        self,
        state: CallState,
        fn: Callable[Concatenate[OpenAI, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        client = self._clients.get()

        def attempt() -> T:
            state.attempts += 1
            token = current_deadline.set(state.deadline_at)
            try:
                return fn(client, *args, **kwargs)
            finally:
                current_deadline.reset(token)

        retrying = tenacity.Retrying(
            sleep=cancellable_sleep,
            before_sleep=functools.partial(self._before_sleep, state),
            **retrying_kwargs(state),
        )
        try:
            result: T = retrying(attempt)
        except BaseException as error:
            self._after_call(state, error)
            raise
        self._after_call(state, None)
        return result

    def _before_sleep(self, state: CallState, retry_state: tenacity.RetryCallState) -> None:
        cancel = current_cancel.get()
        if cancel is not None and cancel.is_set():
            # The batch was abandoned and its requests cut: no retry, and nothing to report.
            raise BatchCancelled
        details = self._retry_details(state, retry_state)
        if details is not None and self._on_retry is not None:
            try:
                self._on_retry(details)
            except Exception:
                log_hook_failure(self._on_retry)

    def _after_call(self, state: CallState, error: BaseException | None) -> None:
        details = self._finished(state, error)
        if details is not None and self._on_call is not None:
            try:
                self._on_call(details)
            except Exception:
                log_hook_failure(self._on_call)

    # -- endpoints -----------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Any],
        *,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """One chat completion, with retries and the deadline; returns the official type.

        Unknown keyword arguments go to ``client.chat.completions.create`` unchanged.
        """
        checked = check_messages(messages)
        chosen = model or self.chat_model

        def create(client: OpenAI) -> ChatCompletion:
            return check_completion(
                client.chat.completions.create(model=chosen, messages=cast(Any, checked), **params)
            )

        return self._run("chat.completions", create, deadline)

    def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
        **params: Any,
    ) -> str:
        """Send ``prompt`` (and an optional ``system`` message); return the reply's text."""
        completion = self.chat(
            prompt_messages(prompt, system), model=model, deadline=deadline, **params
        )
        return completion_text(completion)

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
        return completion_text(self.chat(messages, model=model, deadline=deadline))

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

        Unknown keyword arguments (``dimensions``, ``user``...) go to the official method.
        """
        request = EmbeddingRequest.build(texts, model=model or self.embedding_model, params=params)

        body = self._run("embeddings", send_embeddings, deadline, request)
        vectors = decode_embeddings(body, len(request.inputs)).vectors
        return vectors[0] if request.single else vectors

    def call(
        self,
        fn: Callable[Concatenate[OpenAI, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(openai_client, *args, **kwargs)`` with the client's retries and deadline.

        The escape hatch for any endpoint. A ``deadline=`` keyword is taken by this method.
        """
        deadline = cast("float | None", kwargs.pop("deadline", UNSET))
        operation = getattr(fn, "__qualname__", "call")
        return self._run(operation, fn, deadline, *args, **kwargs)

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
    ) -> BatchStream[list[float]]:
        """Embed any iterable in bounded concurrent requests; stream outcomes as they finish.

        Holds only a bounded window of inputs, so a generator of millions of texts is fine. Use
        it as a context manager; see :meth:`embed_batch` for the arguments.

        Returns:
            A :class:`BatchStream` of ``(index, vector)`` and ``(index, ItemFailure)`` pairs.
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

    def embed_batch(
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

        Args:
            texts: any iterable of strings; non-strings and blank strings fail alone.
            model: defaults to the client's ``embedding_model``.
            batch_size: inputs per request (default and cap 2048); requests also stay under
                300,000 tokens.
            max_concurrency: requests in flight (default: the client's); lowered on 429s.
            too_long: ``"fail"`` or ``"truncate"`` inputs over 8,191 tokens.
            requests_per_minute: optional client-side request budget.
            tokens_per_minute: optional client-side token budget.
            deadline: per request, retries included (default: the client's).
            progress: show a tqdm progress bar.
            on_progress: called as ``on_progress(done, total)``.
            **params: passed to the embeddings endpoint (``dimensions``, ``user``...).

        Returns:
            A :class:`BatchResult` with the vectors in input order.
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
        return _drain(stream)

    def _embed_stream(
        self,
        texts: Iterable[object],
        *,
        keep_values: bool,
        deadline: float | None,
        params: dict[str, Any],
        **options: Any,
    ) -> BatchStream[list[float]]:
        check_deadline(deadline)
        flow, units, bar, model = self._embedding_job(texts, keep_values=keep_values, **options)
        EmbeddingRequest.build(["check"], model=model, params=params)  # bad params fail now

        def execute(request: PlannedRequest) -> list[Outcome]:
            return embed_unit(self, request, flow, model=model, deadline=deadline, params=params)

        return BatchStream(run_units(units, execute, flow, bar, self._workers), flow, bar)

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
    ) -> BatchStream[str]:
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

    def summarize_batch(
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
        """Summarise many texts, one chat completion each, with the bounds of :meth:`embed_batch`.

        Texts longer than ``max_input_tokens`` (default 100,000) are split, each part
        summarised, and the part summaries summarised (map-reduce).
        """
        return _drain(
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
    ) -> BatchStream[str]:
        check_deadline(deadline)
        job = self._summary_job(texts, **options)

        def execute(unit: Single) -> list[Outcome]:
            return summarize_unit(
                self,
                unit,
                job.flow,
                counter=job.counter,
                max_input_tokens=job.max_input_tokens,
                messages=job.messages,
                model=job.model,
                deadline=deadline,
            )

        return BatchStream(
            run_units(job.units, execute, job.flow, job.progress, self._workers),
            job.flow,
            job.progress,
        )

    def map(
        self,
        fn: Callable[[Any], T],
        items: Iterable[Any],
        *,
        max_concurrency: int | None = None,
        deadline_per_item: float | None = None,
        progress: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> BatchResult[T]:
        """Call ``fn(item)`` for every item on a bounded pool of threads, results in order.

        Every item ends as a value or a recorded failure. Calls that ``fn`` makes through
        resilient_llm clients inherit ``deadline_per_item`` and count their retries in the
        batch's stats; other code in ``fn`` cannot be interrupted from outside its thread.
        """
        flow, units, bar, limit = self._map_job(
            fn,
            items,
            max_concurrency=max_concurrency,
            deadline_per_item=deadline_per_item,
            progress=progress,
            on_progress=on_progress,
        )

        def execute(unit: Single) -> list[Outcome]:
            return map_unit(fn, unit, flow, deadline_per_item=limit)

        return _drain(BatchStream(run_units(units, execute, flow, bar, self._workers), flow, bar))

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._clients.closed

    def close(self) -> None:
        """Close every thread's official client and its connections."""
        self._workers.close()
        self._clients.close()

    def __enter__(self) -> ResilientClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
