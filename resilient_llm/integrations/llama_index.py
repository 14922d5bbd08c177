"""LlamaIndex embeddings on resilient_llm's batch engine: a drop-in for ``OpenAIEmbedding``.

```python
from llama_index.core import Settings
from resilient_llm.integrations.llama_index import ResilientEmbedding

Settings.embed_model = ResilientEmbedding(model_name="text-embedding-3-small", deadline=60)
```

Needs ``pip install 'resilient-llm[llama-index]'``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, model_validator
from typing_extensions import Unpack

from ._engine import EmbeddingEngine, EmbeddingOptions, OptionsKwargs
from ._extras import needs

with needs(__name__, "llama-index-core", "llama-index"):
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.callbacks.base import CallbackManager

__all__ = ["ResilientEmbedding"]


class _Kwargs(OptionsKwargs, total=False):
    model_name: str
    model: str
    embedding_model: str
    embed_batch_size: int
    callback_manager: CallbackManager | None
    num_workers: int | None
    embeddings_cache: Any


class ResilientEmbedding(BaseEmbedding, EmbeddingOptions):
    """LlamaIndex :class:`BaseEmbedding` on ``embed_batch``.

    LlamaIndex hands over ``embed_batch_size`` texts at a time (2048 here, its maximum, so the
    engine rather than LlamaIndex decides the requests); they go out in bounded concurrent
    requests of ``batch_size`` inputs with deadlines and retries, and an input the server
    rejects is isolated by bisection. When any text still fails, the call raises
    :class:`~resilient_llm.BatchFailed` (``.result`` holds the vectors and every failure):
    an index is never built with a missing or made-up vector.

    Sync methods run on a :class:`~resilient_llm.ResilientClient`, async ones on an
    :class:`~resilient_llm.AsyncResilientClient` in the running event loop. Pass those clients
    (``client=``, ``async_client=``; you keep ownership), or the same options as the clients.

    Args:
        model_name: embedding model (aliases ``model``, ``embedding_model``); defaults to the
            client's, else ``text-embedding-3-small``.
        embed_batch_size: texts LlamaIndex passes per call (default 2048).
        **options: ``client``, ``async_client``, ``api_key`` (default ``OPENAI_API_KEY``),
            ``base_url`` (default ``OPENAI_BASE_URL``), ``organization``, ``project``,
            ``default_headers``, ``timeouts``, ``retry``, ``dimensions``, ``deadline``,
            ``batch_size``, ``max_concurrency``, ``requests_per_minute``,
            ``tokens_per_minute``, ``too_long``, as for
            :class:`resilient_llm.integrations.langchain.ResilientEmbeddings`; plus
            LlamaIndex's own (``callback_manager``, ``embeddings_cache``...).

    Raises:
        ValueError: connection options next to ``client=``/``async_client=``, or a bad value.
        openai.OpenAIError: no API key given and none in ``OPENAI_API_KEY``.
    """

    embed_batch_size: int = Field(
        default=2048, gt=0, le=2048, description="Texts LlamaIndex passes per call."
    )

    _engine: EmbeddingEngine = PrivateAttr()

    def __init__(self, **options: Unpack[_Kwargs]) -> None:
        # Typed for callers; pydantic validates and converts (api_key str -> SecretStr).
        data: dict[str, Any] = dict(options)
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _model_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = [name for name in ("model_name", "model", "embedding_model") if name in data]
        if len(names) > 1:
            raise ValueError(f"pass one of {', '.join(names)}, not several")
        if names and names[0] != "model_name":
            data = dict(data)
            data["model_name"] = data.pop(names[0])
        return data

    @model_validator(mode="after")
    def _build(self) -> ResilientEmbedding:
        self.check_connection_options()
        explicit = self.model_name if "model_name" in self.model_fields_set else None
        self._engine = self.build_engine(explicit)
        if explicit is None:
            self.model_name = self._engine.embedding_model
        return self

    @classmethod
    def class_name(cls) -> str:
        return "ResilientEmbedding"

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._engine.embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._engine.aembed([query]))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._engine.embed([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._engine.aembed([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._engine.embed(texts)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._engine.aembed(texts)

    def close(self) -> None:
        """Close the sync client if it was built here (given clients are the caller's)."""
        self._engine.close()

    async def aclose(self) -> None:
        """Close both clients if they were built here (given clients are the caller's)."""
        await self._engine.aclose()
