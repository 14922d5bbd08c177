"""What the sync and async facades share: their settings, checked once, and their bookkeeping.

No I/O: validating the constructor's arguments, the official client's arguments, a fresh
:class:`~._call.CallState` per call, the jobs of batches, and what happens when a call ends
(counters, hook records, masking the API key).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import openai

# openai imports its resource modules on first attribute access (~35 ms): pay that at import,
# not on an event loop at the first call.
import openai.resources.chat.chat
import openai.resources.chat.completions.completions
import openai.resources.embeddings

from ._batch.jobs import EmbedJob, MapJob, SummaryJob
from ._batch.planning import Item, prepare_item, rate_cost
from ._call import CallState
from ._config import (
    BatchOptions,
    RetryPolicy,
    Timeouts,
    TimeoutsLike,
    check_callable,
    check_deadline,
    check_int,
    check_model,
)
from ._context import current_scope
from ._endpoints import EmbeddingRequest, EmbeddingsCall
from ._exceptions import ClientClosedError, InvalidInput
from ._http import prepare_tls, to_native_timeout
from ._inputs import MAX_EMBEDDING_INPUT_TOKENS
from ._records import CallDetails, CallSink, ClientStats, StatsCounter
from ._secrets import register, scrub
from ._tokens import get_token_counter

__all__ = ["UNSET", "ClientBase", "Hook", "LOCAL_PLACEHOLDER_KEY"]

logger = logging.getLogger("resilient_llm")

Hook = Callable[[Any], Any]
C = TypeVar("C")

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Sent to a server of your own (vLLM, Ollama, a proxy) when no key is set, as their docs suggest.
LOCAL_PLACEHOLDER_KEY = "EMPTY"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _check_iterable(value: object, name: str) -> Iterable[object]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        hint = " (use embed()/summarize() for one text)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be an iterable of inputs, not {type(value).__name__}{hint}")
    return value


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or base_url.rstrip("/").startswith(OPENAI_BASE_URL.rsplit("/", 1)[0])


class ClientBase(Generic[C]):
    """Settings and bookkeeping common to :class:`ResilientClient` and its async twin."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        chat_model: str = "gpt-4o-mini",
        embedding_model: str = "text-embedding-3-small",
        timeouts: TimeoutsLike = None,
        deadline: float | None = 120.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 8,
        rate_limiter: Any = None,
        openai_factory: Callable[[Any], Any] | None = None,
        on_retry: Hook | None = None,
        on_call: Hook | None = None,
    ) -> None:
        for name, value in (
            ("api_key", api_key),
            ("base_url", base_url),
            ("organization", organization),
            ("project", project),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if default_headers is not None and not isinstance(default_headers, Mapping):
            raise TypeError("default_headers must be a mapping of header names to values")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if rate_limiter is not None and not (
            hasattr(rate_limiter, "reserve") and hasattr(rate_limiter, "pause")
        ):
            raise TypeError(
                "rate_limiter must have reserve() and pause() (a RateLimiter), "
                f"not {type(rate_limiter).__name__}"
            )
        check_callable("openai_factory", openai_factory)
        check_callable("on_retry", on_retry)
        check_callable("on_call", on_call)

        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if api_key is None and openai_factory is None:
            if _is_openai(self._base_url):
                # What openai.OpenAI says in the same situation.
                raise openai.OpenAIError(
                    "The api_key client option must be set either by passing api_key to the "
                    "client or by setting the OPENAI_API_KEY environment variable"
                )
            api_key = LOCAL_PLACEHOLDER_KEY
        register(api_key)
        self._api_key = api_key
        self._organization = organization
        self._project = project
        self._default_headers = dict(default_headers) if default_headers else None
        self.chat_model = check_model(chat_model, "chat_model")
        self.embedding_model = check_model(embedding_model, "embedding_model")
        self.timeouts = Timeouts.coerce(timeouts)
        self.deadline = check_deadline(deadline)
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_concurrency = check_int("max_concurrency", max_concurrency)
        self.rate_limiter = rate_limiter
        self._openai_factory = openai_factory
        self._on_retry = on_retry
        self._on_call = on_call
        self._stats = StatsCounter()
        prepare_tls()  # once per process, here rather than on an event loop at the first call
        self._setup()

    def _setup(self) -> None:
        """Subclasses build their per-thread or per-loop client registry here."""
        raise NotImplementedError

    def __repr__(self) -> str:
        # Never the API key: not even a prefix of it.
        return (
            f"{type(self).__name__}(base_url={self._base_url!r}, chat_model={self.chat_model!r}, "
            f"embedding_model={self.embedding_model!r}, deadline={self.deadline!r}, "
            f"max_attempts={self.retry.max_attempts})"
        )

    @property
    def base_url(self) -> str:
        """Where requests go (``OPENAI_BASE_URL`` or OpenAI's when none was given)."""
        return self._base_url or OPENAI_BASE_URL

    @property
    def stats(self) -> ClientStats:
        """Counters since the client was made: calls, attempts, retries, rate limits, timeouts."""
        return self._stats.snapshot()

    @property
    def is_closed(self) -> bool:
        """Whether the client was closed."""
        raise NotImplementedError

    def _ensure_open(self) -> None:
        # A batch on a closed client would record one failure per input; say it once instead.
        if self.is_closed:
            raise ClientClosedError("this client is closed; create a new one")

    # -- the official client ---------------------------------------------------------------

    def _openai_kwargs(self) -> dict[str, Any]:
        return {
            "api_key": self._api_key,
            "base_url": self._base_url,
            "organization": self._organization,
            "project": self._project,
            "default_headers": self._default_headers,
            "timeout": to_native_timeout(self.timeouts),
            # Retries happen once, here: the official client's own would multiply them.
            "max_retries": 0,
        }

    def _adopt(self, client: C, http_client: Any) -> C:
        """Accept a client from ``openai_factory``: on our HTTP client, its retries off."""
        if getattr(client, "_client", None) is not http_client:
            raise TypeError(
                "openai_factory must build its client on the http_client it is given "
                "(for example openai.AzureOpenAI(..., http_client=http_client)); on another "
                "HTTP client the deadline and the timeouts of resilient_llm could not hold"
            )
        if getattr(client, "max_retries", 0) != 0:
            adopted: C = client.with_options(max_retries=0)  # type: ignore[attr-defined]
            return adopted
        return client

    # -- calls -----------------------------------------------------------------------------

    def _call_state(
        self,
        operation: str | None,
        deadline: float | None,
        *,
        tokens: int = 0,
        sink: CallSink | None = None,
        limiters: tuple[Any, ...] = (),
    ) -> CallState:
        budget = (
            self.deadline if deadline is UNSET or deadline is None else check_deadline(deadline)
        )
        scope = current_scope()
        if self.rate_limiter is not None:
            limiters = (self.rate_limiter, *limiters)
        return CallState(
            operation,
            policy=self.retry,
            deadline=budget,
            outer_deadline_at=scope.deadline_at,
            stats=self._stats,
            sink=sink if sink is not None else scope.sink,
            limiters=limiters,
            tokens=tokens,
        )

    def _finished(
        self, state: CallState, error: BaseException | None, chunks: int | None = None
    ) -> CallDetails | None:
        if error is not None:
            scrub(error)
        self._stats.add(
            calls=1,
            attempts=state.attempts,
            succeeded=int(error is None),
            failed=int(error is not None),
        )
        return state.details(error, chunks) if self._on_call is not None else None

    def _stream_options(self, state: CallState, *, text_only: bool) -> dict[str, Any]:
        """What a stream wrapper needs to know of the call that opened it."""
        return {
            "operation": state.name,
            "deadline": state.deadline,
            "deadline_at": state.deadline_at,
            "attempts": state.attempts,
            "text_only": text_only,
        }

    def _embed_call(
        self, texts: object, model: str | None, params: dict[str, Any]
    ) -> tuple[EmbeddingsCall, bool]:
        """The request of ``embed(texts)``, every text checked as a batch checks it; and whether
        one text (not a sequence) was given."""
        chosen = check_model(model or self.embedding_model)
        counter = get_token_counter(chosen)
        if isinstance(texts, str):
            raws: Sequence[object] = [texts]
            names = ["text"]
        elif isinstance(texts, Sequence) and not isinstance(texts, (bytes, bytearray)):
            raws = texts
            names = [f"texts[{position}]" for position in range(len(texts))]
        else:
            hint = " (decode bytes first)" if isinstance(texts, (bytes, bytearray)) else ""
            raise TypeError(
                f"texts must be a str or a sequence of str, not {type(texts).__name__}{hint}"
            )
        items: list[Item] = []
        for position, (raw, name) in enumerate(zip(raws, names, strict=True)):
            if not isinstance(raw, str):
                raise TypeError(f"{name} must be a str, not {type(raw).__name__}")
            try:
                items.append(
                    prepare_item(
                        position, raw, counter=counter, max_item_tokens=MAX_EMBEDDING_INPUT_TOKENS
                    )
                )
            except InvalidInput as error:
                raise InvalidInput(f"{name}: {error}") from None
        request = EmbeddingRequest.build([item.text for item in items], model=chosen, params=params)
        return EmbeddingsCall(request, tokens=rate_cost(items)), isinstance(texts, str)

    # -- batches ---------------------------------------------------------------------------

    def _embed_job(
        self, texts: Iterable[object], options: dict[str, Any], *, keep_values: bool
    ) -> EmbedJob:
        self._ensure_open()
        source = _check_iterable(texts, "texts")
        checked = BatchOptions.for_embeddings(
            options,
            default_model=self.embedding_model,
            default_concurrency=self.max_concurrency,
        )
        return EmbedJob(source, checked, keep_values=keep_values, base_url=self.base_url)

    def _summary_job(
        self, texts: Iterable[object], options: dict[str, Any], *, keep_values: bool
    ) -> SummaryJob:
        self._ensure_open()
        source = _check_iterable(texts, "texts")
        checked = BatchOptions.for_summaries(
            options, default_model=self.chat_model, default_concurrency=self.max_concurrency
        )
        return SummaryJob(source, checked, keep_values=keep_values, base_url=self.base_url)

    def _map_job(
        self, fn: Callable[[Any], Any], items: Iterable[object], options: dict[str, Any]
    ) -> MapJob:
        self._ensure_open()
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        source = _check_iterable(items, "items")
        checked = BatchOptions.for_map(options, default_concurrency=self.max_concurrency)
        return MapJob(source, checked, fn=fn, keep_values=True, base_url=self.base_url)


def log_hook_failure(hook: object) -> None:
    """A hook that raises is logged and never breaks the call."""
    logger.error("hook %r raised; ignored", hook, exc_info=True)
