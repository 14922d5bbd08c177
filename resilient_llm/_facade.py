"""What the sync and async facades share: settings, validation, counters, hooks. No I/O."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import openai

# openai imports its resource modules on first attribute access (~35 ms): pay that at import,
# not on an event loop at the first call.
import openai.resources.chat.chat
import openai.resources.chat.completions.completions
import openai.resources.embeddings

from ._batch import (
    MAX_BATCH_SIZE,
    MAX_REQUEST_TOKENS,
    validate_batch_size,
    validate_positive_int,
    validate_too_long,
)
from ._config import RetryPolicy, Timeouts, TimeoutsLike, check_deadline, check_positive
from ._exceptions import ClientClosedError
from ._http import prepare_tls, to_native_timeout
from ._jobs import (
    BatchFlow,
    Rejected,
    Single,
    Unit,
    embedding_units,
    item_units,
    text_units,
)
from ._operations import COMBINE_INSTRUCTIONS, _check_model, summary_messages
from ._policy import (
    CallDetails,
    CallState,
    ClientStats,
    RetryDetails,
    StatsCounter,
    current_deadline,
    retry_observer,
)
from ._progress import Progress, ProgressCallback
from ._tokens import TokenCounter, get_token_counter

__all__ = ["UNSET", "BatchJobs", "FacadeBase", "Hook", "SummaryJob"]

# Long texts are map-reduced above this many tokens (well inside current chat context windows).
DEFAULT_MAX_INPUT_TOKENS = 100_000

logger = logging.getLogger("resilient_llm")

Hook = Callable[[Any], Any]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


def _check_iterable(value: object, name: str) -> Iterable[object]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        hint = " (use embed()/summarize() for one text)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be an iterable of inputs, not {type(value).__name__}{hint}")
    return value


def _known_length(value: Iterable[object]) -> int | None:
    return len(value) if isinstance(value, Sized) else None


class BatchJobs:
    """Argument checks and planning of batch jobs, shared by both facades (no I/O)."""

    max_concurrency: int
    embedding_model: str
    chat_model: str

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` / ``aclose()`` was called."""
        raise NotImplementedError

    def _ensure_open(self) -> None:
        # A batch on a closed client would record one failure per input; say it once instead.
        if self.is_closed:
            raise ClientClosedError("this client is closed; create a new one")

    def _concurrency(self, value: int | None) -> int:
        if value is None:
            return self.max_concurrency
        return validate_positive_int(value, "max_concurrency")

    def _embedding_job(
        self,
        texts: Iterable[object],
        *,
        model: str | None,
        batch_size: int | None,
        max_concurrency: int | None,
        too_long: str,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        progress: bool,
        on_progress: ProgressCallback | None,
        keep_values: bool,
    ) -> tuple[BatchFlow[list[float]], Iterator[Unit], Progress, str]:
        self._ensure_open()
        source = _check_iterable(texts, "texts")
        chosen = _check_model(model or self.embedding_model)
        size = validate_batch_size(MAX_BATCH_SIZE if batch_size is None else batch_size)
        mode = validate_too_long(too_long)
        flow: BatchFlow[list[float]] = BatchFlow(
            keep_values=keep_values,
            max_concurrency=self._concurrency(max_concurrency),
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )
        units = embedding_units(
            source,
            accountant=flow.accountant,
            counter=get_token_counter(chosen),
            batch_size=size,
            max_request_tokens=MAX_REQUEST_TOKENS,
            too_long=mode,
        )
        bar = Progress(
            enabled=progress,
            on_progress=on_progress,
            total=_known_length(source),
            description="embed",
        )
        return flow, units, bar, chosen

    def _summary_job(
        self,
        texts: Iterable[object],
        *,
        instructions: str | None,
        max_words: int | None,
        model: str | None,
        max_input_tokens: int | None,
        max_concurrency: int | None,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        progress: bool,
        on_progress: ProgressCallback | None,
        keep_values: bool,
    ) -> SummaryJob:
        self._ensure_open()
        source = _check_iterable(texts, "texts")
        summary_messages("check", instructions, max_words)  # bad options fail before any I/O
        chosen = _check_model(model or self.chat_model)
        limit = DEFAULT_MAX_INPUT_TOKENS if max_input_tokens is None else max_input_tokens
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 16:
            raise ValueError(f"max_input_tokens must be an int >= 16, got {max_input_tokens!r}")
        counter = get_token_counter(chosen)
        flow: BatchFlow[str] = BatchFlow(
            keep_values=keep_values,
            max_concurrency=self._concurrency(max_concurrency),
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
        )

        def messages(text: str, combine: bool) -> list[dict[str, str]]:
            guidance = instructions
            if combine:
                guidance = COMBINE_INSTRUCTIONS + (f"\n{instructions}" if instructions else "")
            return summary_messages(text, guidance, max_words)

        return SummaryJob(
            flow=flow,
            units=text_units(source, accountant=flow.accountant, counter=counter),
            progress=Progress(
                enabled=progress,
                on_progress=on_progress,
                total=_known_length(source),
                description="summarize",
            ),
            counter=counter,
            max_input_tokens=limit,
            messages=messages,
            model=chosen,
        )

    def _map_job(
        self,
        fn: object,
        items: Iterable[object],
        *,
        max_concurrency: int | None,
        deadline_per_item: float | None,
        progress: bool,
        on_progress: ProgressCallback | None,
    ) -> tuple[BatchFlow[Any], Iterator[Single], Progress, float | None]:
        self._ensure_open()
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        source = _check_iterable(items, "items")
        limit = check_positive("deadline_per_item", deadline_per_item, allow_none=True)
        flow: BatchFlow[Any] = BatchFlow(
            keep_values=True, max_concurrency=self._concurrency(max_concurrency)
        )
        bar = Progress(
            enabled=progress,
            on_progress=on_progress,
            total=_known_length(source),
            description="map",
        )
        return flow, item_units(source, accountant=flow.accountant), bar, limit


@dataclass(frozen=True, slots=True)
class SummaryJob:
    """Everything a shell needs to run ``summarize_batch``."""

    flow: BatchFlow[str]
    units: Iterator[Single | Rejected]
    progress: Progress
    counter: TokenCounter
    max_input_tokens: int
    messages: Callable[[str, bool], list[dict[str, str]]]
    model: str


class FacadeBase(BatchJobs):
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
        openai_factory: Callable[[Any], Any] | None = None,
        on_retry: Hook | None = None,
        on_call: Hook | None = None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a str, not {type(api_key).__name__}")
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if api_key is None and openai_factory is None:
            raise openai.OpenAIError(
                "no API key: pass api_key=... or set the OPENAI_API_KEY environment variable"
            )
        for name, value in (("base_url", base_url), ("organization", organization)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if project is not None and not isinstance(project, str):
            raise TypeError(f"project must be a str, not {type(project).__name__}")
        if default_headers is not None and not isinstance(default_headers, Mapping):
            raise TypeError("default_headers must be a mapping of header names to values")
        validate_positive_int(max_concurrency, "max_concurrency")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        _check_callable("openai_factory", openai_factory)
        _check_callable("on_retry", on_retry)
        _check_callable("on_call", on_call)

        self._api_key = api_key
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self._organization = organization
        self._project = project
        self._default_headers = dict(default_headers) if default_headers else None
        self.chat_model = _check_model(chat_model, "chat_model")
        self.embedding_model = _check_model(embedding_model, "embedding_model")
        self.timeouts = Timeouts.coerce(timeouts)
        self.deadline = check_deadline(deadline)
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_concurrency = max_concurrency
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
    def stats(self) -> ClientStats:
        """Counters since the client was made: calls, attempts, retries, rate limits, timeouts."""
        return self._stats.snapshot()

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

    def _adopt(self, client: Any) -> Any:
        """Accept a client from ``openai_factory``, turning its own retries off."""
        if getattr(client, "max_retries", 0) != 0:
            client = client.with_options(max_retries=0)
        return client

    def _call_state(self, operation: str, deadline: float | None) -> CallState:
        budget = (
            self.deadline if deadline is UNSET or deadline is None else check_deadline(deadline)
        )
        return CallState(
            operation,
            policy=self.retry,
            deadline=budget,
            stats=self._stats,
            outer_deadline_at=current_deadline.get(),
            observer=retry_observer.get(),
        )

    def _retry_details(self, state: CallState, retry_state: Any) -> RetryDetails | None:
        details = state.retry_details(retry_state)
        return details if self._on_retry is not None else None

    def _scrub(self, error: BaseException) -> None:
        """Mask the API key in an error's text, should a server or proxy have echoed it."""
        key = self._api_key
        if not key or len(key) < 8:
            return
        error.args = tuple(
            arg.replace(key, "***") if isinstance(arg, str) else arg for arg in error.args
        )
        message = getattr(error, "message", None)
        if isinstance(message, str) and key in message:
            error.message = message.replace(key, "***")  # type: ignore[attr-defined]

    def _finished(self, state: CallState, error: BaseException | None) -> CallDetails | None:
        if error is not None:
            self._scrub(error)
        self._stats.add(
            calls=1,
            attempts=state.attempts,
            succeeded=int(error is None),
            failed=int(error is not None),
        )
        return state.details(error) if self._on_call is not None else None


def log_hook_failure(hook: object) -> None:
    """A hook that raises is logged and never breaks the call."""
    logger.error("hook %r raised; ignored", hook, exc_info=True)
