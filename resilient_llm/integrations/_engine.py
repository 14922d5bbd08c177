"""What the LangChain and LlamaIndex adapters share: their settings, clients and calls.

No framework is imported here: each adapter module imports its own framework, and both run
their documents through :meth:`ResilientClient.embed_batch` (sync methods) or
:meth:`AsyncResilientClient.embed_batch` (async methods, on the running loop: no thread hop).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SecretStr

from .._async_client import AsyncResilientClient
from .._batch.results import BatchResult
from .._client import ResilientClient
from .._config import RetryPolicy, Timeouts

__all__ = [
    "CONNECTION_OPTIONS",
    "EmbeddingEngine",
    "EmbeddingOptions",
    "OptionsKwargs",
    "env_api_key",
    "env_base_url",
]

# Options that configure clients this adapter builds; meaningless next to a given client.
CONNECTION_OPTIONS = (
    "api_key",
    "base_url",
    "organization",
    "project",
    "default_headers",
    "timeouts",
    "retry",
)


def env_api_key() -> SecretStr | None:
    """``OPENAI_API_KEY``, read when the adapter is made (as LangChain's own adapters do)."""
    value = os.environ.get("OPENAI_API_KEY")
    return SecretStr(value) if value else None


def env_base_url() -> str | None:
    """``OPENAI_BASE_URL``, read when the adapter is made."""
    return os.environ.get("OPENAI_BASE_URL") or None


class OptionsKwargs(TypedDict, total=False):
    """The keyword arguments of :class:`EmbeddingOptions`, as callers may pass them.

    The adapters' ``__init__`` take ``**Unpack[...]`` of this, so that type checkers accept
    ``api_key="sk-..."`` (stored as a ``SecretStr``) and flag misspelt options.
    """

    client: ResilientClient | None
    async_client: AsyncResilientClient | None
    api_key: str | SecretStr | None
    base_url: str | None
    organization: str | None
    project: str | None
    default_headers: Mapping[str, str] | None
    timeouts: Timeouts | float | None
    retry: RetryPolicy | None
    dimensions: int | None
    deadline: float | None
    batch_size: int | None
    max_concurrency: int | None
    requests_per_minute: float | None
    tokens_per_minute: float | None
    too_long: Literal["fail", "truncate"]


class EmbeddingOptions(BaseModel):
    """The fields both adapters declare: how to reach the server, and how to batch.

    Not a public class: the adapters inherit these fields so that they read the same.
    """

    # hide_input_in_errors: a validation error must never echo the API key it was given.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", hide_input_in_errors=True
    )

    client: ResilientClient | None = Field(default=None, exclude=True, repr=False)
    """A client for the sync methods; the caller keeps ownership (and closes it)."""
    async_client: AsyncResilientClient | None = Field(default=None, exclude=True, repr=False)
    """A client for the async methods; the caller keeps ownership (and closes it)."""

    api_key: SecretStr | None = Field(default_factory=env_api_key, exclude=True)
    """Defaults to ``OPENAI_API_KEY``; never shown in ``repr()``, never serialised."""
    base_url: str | None = Field(default_factory=env_base_url)
    """Defaults to ``OPENAI_BASE_URL``, then OpenAI's."""
    organization: str | None = None
    project: str | None = None
    default_headers: dict[str, str] | None = Field(default=None, exclude=True, repr=False)
    """Extra headers on every request (not serialised: they may carry credentials)."""
    timeouts: Timeouts | PositiveFloat | None = None
    """Per-attempt HTTP timeouts (a number sets all four); defaults to :class:`Timeouts`."""
    retry: RetryPolicy | None = None
    """The :class:`RetryPolicy`; defaults to ``RetryPolicy()``."""

    dimensions: PositiveInt | None = None
    """Output dimensions, for models that support them (``text-embedding-3-*``)."""
    deadline: PositiveFloat | None = None
    """Seconds per request, retries included; defaults to the client's (120 s here)."""
    batch_size: PositiveInt | None = None
    """Inputs per request (default and cap 2048; requests also stay under 300,000 tokens)."""
    max_concurrency: PositiveInt | None = None
    """Requests in flight at once; defaults to the client's (8)."""
    requests_per_minute: PositiveFloat | None = None
    """Optional client-side request budget."""
    tokens_per_minute: PositiveFloat | None = None
    """Optional client-side token budget."""
    too_long: Literal["fail", "truncate"] = "fail"
    """What happens to inputs over the model's 8,191-token limit: they fail, or are cut."""

    def connection_kwargs(self, model: str | None) -> dict[str, Any]:
        """Arguments for the clients this adapter builds."""
        kwargs: dict[str, Any] = {
            "api_key": self.api_key.get_secret_value() if self.api_key is not None else None,
            "base_url": self.base_url,
            "organization": self.organization,
            "project": self.project,
            "default_headers": self.default_headers,
            "timeouts": self.timeouts,
            "retry": self.retry,
        }
        if model is not None:
            kwargs["embedding_model"] = model
        if self.deadline is not None:
            kwargs["deadline"] = self.deadline
        if self.max_concurrency is not None:
            kwargs["max_concurrency"] = self.max_concurrency
        return kwargs

    def batch_kwargs(self, model: str | None) -> dict[str, Any]:
        """Arguments for every ``embed_batch`` call."""
        kwargs: dict[str, Any] = {
            "model": model,
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
            "too_long": self.too_long,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "deadline": self.deadline,
        }
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        return kwargs

    def check_connection_options(self) -> None:
        """Refuse connection options next to a given client: they would be silently ignored."""
        if self.client is None and self.async_client is None:
            return
        given = sorted(self.model_fields_set.intersection(CONNECTION_OPTIONS))
        if given:
            raise ValueError(
                f"{', '.join(given)}: these options apply only to clients the adapter builds; "
                "with client= or async_client=, set them on those clients instead"
            )

    def build_engine(self, model: str | None) -> EmbeddingEngine:
        """The engine: the given clients, or a sync and an async client built from the options.

        Building them opens no connection (each thread or event loop makes its own official
        client on first use), and a missing API key fails here rather than at the first call.
        """
        if self.client is not None or self.async_client is not None:
            return EmbeddingEngine(
                self.client, self.async_client, self.batch_kwargs(model), owned=False
            )
        connection = self.connection_kwargs(model)
        return EmbeddingEngine(
            ResilientClient(**connection),
            AsyncResilientClient(**connection),
            self.batch_kwargs(model),
            owned=True,
        )


class EmbeddingEngine:
    """Embeds lists of texts through ``embed_batch`` and raises when any of them failed."""

    def __init__(
        self,
        client: ResilientClient | None,
        async_client: AsyncResilientClient | None,
        batch_kwargs: Mapping[str, Any],
        *,
        owned: bool,
    ) -> None:
        self._client = client
        self._async_client = async_client
        self._batch_kwargs = dict(batch_kwargs)
        self._owned = owned

    @property
    def embedding_model(self) -> str:
        """The model requests name: the adapter's, else the client's."""
        model = self._batch_kwargs.get("model")
        if model is not None:
            return cast(str, model)
        client = self._client if self._client is not None else self._async_client
        assert client is not None
        return client.embedding_model

    @property
    def client(self) -> ResilientClient:
        if self._client is None:
            raise RuntimeError(
                "this adapter was given only async_client=, so its sync methods have no client; "
                "pass client=ResilientClient(...) too"
            )
        return self._client

    @property
    def async_client(self) -> AsyncResilientClient:
        if self._async_client is None:
            raise RuntimeError(
                "this adapter was given only client=, so its async methods have no client; "
                "pass async_client=AsyncResilientClient(...) too"
            )
        return self._async_client

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` in order on the sync client.

        Raises:
            BatchFailed: any text failed, after retries and isolation of poisoned inputs.
        """
        if not texts:
            return []
        return _vectors(self.client.embed_batch(texts, **self._batch_kwargs))

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` in order on the async client, on the running event loop.

        Raises:
            BatchFailed: any text failed, after retries and isolation of poisoned inputs.
        """
        if not texts:
            return []
        return _vectors(await self.async_client.embed_batch(texts, **self._batch_kwargs))

    def close(self) -> None:
        """Close the sync client, if this adapter built it."""
        if self._owned and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close both clients, if this adapter built them."""
        if self._owned and self._async_client is not None:
            await self._async_client.aclose()
        self.close()


def _vectors(result: BatchResult[list[float]]) -> list[list[float]]:
    # LangChain and LlamaIndex have no way to return partial results: all or raise.
    result.raise_for_failures()
    return cast("list[list[float]]", result.values)
