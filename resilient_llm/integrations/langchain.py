"""LangChain embeddings on resilient_llm's batch engine: a drop-in for ``OpenAIEmbeddings``.

```python
from resilient_llm.integrations.langchain import ResilientEmbeddings

embeddings = ResilientEmbeddings(model="text-embedding-3-small", max_concurrency=8, deadline=60)
vectors = embeddings.embed_documents(texts)  # bounded, ordered; raises BatchFailed on any loss
```

Needs ``pip install 'resilient-llm[langchain]'``.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, PrivateAttr, model_validator
from typing_extensions import Self, Unpack

from ._engine import EmbeddingEngine, EmbeddingOptions, OptionsKwargs
from ._extras import needs

with needs(__name__, "langchain-core", "langchain"):
    from langchain_core.embeddings import Embeddings

__all__ = ["ResilientEmbeddings"]


class _Kwargs(OptionsKwargs, total=False):
    model: str | None
    embedding_model: str | None


class ResilientEmbeddings(EmbeddingOptions, Embeddings):
    """LangChain :class:`~langchain_core.embeddings.Embeddings` on ``embed_batch``.

    Documents go out in bounded concurrent requests with deadlines and retries; an input the
    server rejects is isolated by bisection. LangChain's interface has no partial results, so
    when any document still fails, the whole call raises :class:`~resilient_llm.BatchFailed`,
    whose ``.result`` holds every vector that succeeded and every failure with its reason.

    The sync methods run on a :class:`~resilient_llm.ResilientClient`, the async ones on an
    :class:`~resilient_llm.AsyncResilientClient` in the running event loop (asyncio or trio).
    Either pass those clients (``client=``, ``async_client=``; you keep ownership), or the same
    options as the clients and both are built here.

    Args:
        model: embedding model (alias ``embedding_model``); defaults to the client's
            (``text-embedding-3-small``).
        dimensions: output dimensions, for models that support them.
        client: a :class:`~resilient_llm.ResilientClient` for the sync methods.
        async_client: an :class:`~resilient_llm.AsyncResilientClient` for the async methods.
        api_key: defaults to ``OPENAI_API_KEY``; held as a ``SecretStr``.
        base_url: defaults to ``OPENAI_BASE_URL``, then OpenAI's.
        organization: as for ``openai.OpenAI``.
        project: as for ``openai.OpenAI``.
        default_headers: extra headers on every request.
        timeouts: per-attempt :class:`~resilient_llm.Timeouts`, or one number for all four.
        retry: the :class:`~resilient_llm.RetryPolicy`.
        deadline: seconds per request, retries included (default: the client's, 120 s).
        batch_size: inputs per request (default and cap 2048).
        max_concurrency: requests in flight at once (default: the client's, 8).
        requests_per_minute: optional client-side request budget.
        tokens_per_minute: optional client-side token budget.
        too_long: ``"fail"`` (default) or ``"truncate"`` inputs over 8,191 tokens.

    Raises:
        ValueError: connection options next to ``client=``/``async_client=``, or a bad value.
        openai.OpenAIError: no API key given and none in ``OPENAI_API_KEY``.

    Example:
        >>> from resilient_llm import ResilientClient  # doctest: +SKIP
        >>> embeddings = ResilientEmbeddings(client=ResilientClient(deadline=30))  # doctest: +SKIP
        >>> embeddings.embed_query("hello")[:3]  # doctest: +SKIP
    """

    model: str | None = Field(
        default=None, validation_alias=AliasChoices("model", "embedding_model")
    )

    _engine: EmbeddingEngine = PrivateAttr()

    def __init__(self, **options: Unpack[_Kwargs]) -> None:
        # Typed for callers; pydantic validates and converts (api_key str -> SecretStr).
        data: dict[str, Any] = dict(options)
        super().__init__(**data)

    @model_validator(mode="after")
    def _build(self) -> Self:
        self.check_connection_options()
        self._engine = self.build_engine(self.model)
        return self

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents in bounded concurrent requests; vectors in input order.

        Raises:
            BatchFailed: any document failed (empty or non-string texts included).
        """
        return self._engine.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text.

        Raises:
            BatchFailed: the text failed.
        """
        return self._engine.embed([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, on the running event loop (no worker thread).

        Raises:
            BatchFailed: any document failed.
        """
        return await self._engine.aembed(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, on the running event loop (no worker thread).

        Raises:
            BatchFailed: the text failed.
        """
        return (await self._engine.aembed([text]))[0]

    def close(self) -> None:
        """Close the sync client if it was built here (given clients are the caller's)."""
        self._engine.close()

    async def aclose(self) -> None:
        """Close both clients if they were built here (given clients are the caller's)."""
        await self._engine.aclose()
