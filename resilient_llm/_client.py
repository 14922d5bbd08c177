"""ResilientClient: the synchronous facade. It waits and does I/O; decisions live in the core."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, cast, overload

import tenacity
from openai import OpenAI
from openai.types.chat import ChatCompletion

from ._facade import UNSET, FacadeBase, log_hook_failure
from ._http import build_sync_http_client, current_deadline
from ._lifecycle import ThreadClients
from ._operations import (
    EmbeddingRequest,
    check_messages,
    completion_text,
    decode_embeddings,
    prompt_messages,
    summary_messages,
)
from ._policy import CallState, retrying_kwargs

__all__ = ["ResilientClient"]

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
        client = self._clients.get()

        def attempt() -> T:
            state.attempts += 1
            token = current_deadline.set(state.deadline_at)
            try:
                return fn(client, *args, **kwargs)
            finally:
                current_deadline.reset(token)

        retrying = tenacity.Retrying(
            sleep=time.sleep,
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
            completion: ChatCompletion = client.chat.completions.create(
                model=chosen, messages=cast(Any, checked), **params
            )
            return completion

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

        def create(client: OpenAI) -> bytes:
            raw = client.embeddings.with_raw_response.create(**request.kwargs)
            return raw.content

        body = self._run("embeddings", create, deadline)
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

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close every thread's official client and its connections."""
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
