"""What a job needs of its client, without importing the facades (arrows point down).

`BatchJob` runs on a `ResilientClient` and `AsyncBatchJob` on an `AsyncResilientClient`. The two
protocols say which of their members a job uses, and the return types keep a type checker from
accepting the twin (an async client's ``embed_batch`` returns a coroutine, not a
``BatchResult``). At run time `is_client` knows the facades by what only they combine: the
client settings and the closing of their kind.
"""

from __future__ import annotations

from typing import Any, Protocol

from openai import AsyncOpenAI, OpenAI

from .._batch.results import BatchResult
from .._closing import AsyncClosing, Closing
from .._settings import ClientBase

__all__ = ["AsyncJobClient", "JobClient", "is_client"]


class JobClient(Protocol):
    """The members of `ResilientClient` a `BatchJob` uses."""

    chat_model: str
    embedding_model: str

    @property
    def openai(self) -> OpenAI: ...

    def call(self, *args: Any, **kwargs: Any) -> Any: ...

    def chat(self, *args: Any, **kwargs: Any) -> Any: ...

    def embed_batch(self, *args: Any, **kwargs: Any) -> BatchResult[Any]: ...

    def map(self, *args: Any, **kwargs: Any) -> BatchResult[Any]: ...


class AsyncJobClient(Protocol):
    """The members of `AsyncResilientClient` an `AsyncBatchJob` uses."""

    chat_model: str
    embedding_model: str

    @property
    def openai(self) -> AsyncOpenAI: ...

    async def call(self, *args: Any, **kwargs: Any) -> Any: ...

    async def chat(self, *args: Any, **kwargs: Any) -> Any: ...

    async def embed_batch(self, *args: Any, **kwargs: Any) -> BatchResult[Any]: ...

    async def map(self, *args: Any, **kwargs: Any) -> BatchResult[Any]: ...


def is_client(value: object, closing: type[Closing] | type[AsyncClosing]) -> bool:
    """Whether `value` is the facade that closes the `closing` way (sync or async)."""
    return isinstance(value, ClientBase) and isinstance(value, closing)
