"""What the sync and async facades share: settings, validation, counters, hooks. No I/O."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import openai

from ._config import RetryPolicy, Timeouts, TimeoutsLike, check_deadline
from ._http import to_native_timeout
from ._operations import _check_model
from ._policy import CallDetails, CallState, ClientStats, RetryDetails, StatsCounter

__all__ = ["FacadeBase", "Hook", "UNSET"]

logger = logging.getLogger("resilient_llm")

Hook = Callable[[Any], Any]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


class FacadeBase:
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
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be an int, not {type(max_concurrency).__name__}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
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
        return CallState(operation, policy=self.retry, deadline=budget, stats=self._stats)

    def _retry_details(self, state: CallState, retry_state: Any) -> RetryDetails | None:
        details = state.retry_details(retry_state)
        return details if self._on_retry is not None else None

    def _finished(self, state: CallState, error: BaseException | None) -> CallDetails | None:
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
