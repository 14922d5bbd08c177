"""The calls both facades execute: what each endpoint sends, and the answer it reads.

A *call* (:class:`EmbeddingsCall`, :class:`ChatCall`, :class:`FunctionCall`) is one logical
request: ``send(official)`` puts it on the wire with a sync official client, ``asend`` with an
async one (the twins differ only by ``await``), and ``read`` / ``aread`` turn what came back into
the checked answer (:mod:`._answers`) once the request is off the wire (in a batch: its
concurrency slot given back, so decoding a large answer never holds up the next request).
Inputs are checked by :mod:`._inputs` before a call is built.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import anyio.to_thread

from ._answers import EmbeddingsPayload, TextAnswer, check_completion, decode_embeddings
from ._config import MAX_BATCH_SIZE, check_model
from ._direct import JsonRoute, json_route
from ._exceptions import InvalidResponse
from ._http import httpx
from ._streams import Opened, aopen_first, is_official_stream, open_first

__all__ = [
    "ChatAnswer",
    "ChatCall",
    "EmbeddingRequest",
    "EmbeddingsCall",
    "FunctionCall",
]

R = TypeVar("R")

# Bodies larger than this are decoded in a worker thread rather than on an event loop: about
# half a millisecond of decoding, where the hop to the thread is already cheap next to it (a
# 100-input answer of 256 dimensions is ~140 KB; decoding those off the loop makes the pinned
# async batch ~9% faster, the loop free to send the next requests meanwhile).
_DECODE_OFF_LOOP_BYTES = 64 * 1024


# The official methods' per-request options, and their names in the low-level request options.
_REQUEST_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}


def _json_content(body: Mapping[str, Any]) -> bytes | None:
    """``body`` encoded as the SDK encodes it, or ``None`` if only the SDK's encoder can (a
    pydantic model or a date in ``extra_body``, say)."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """The body and options of one embeddings request.

    Sent with the official client's low-level ``post`` and read as raw bytes: the SDK's request
    transformation walks every input through type introspection, and its response models cost
    more than the vectors; skipping both is what makes batches faster than the raw client.
    """

    inputs: list[str]
    body: dict[str, Any]
    options: dict[str, Any]
    dimensions: int | None
    content: bytes | None = None

    @classmethod
    def build(cls, inputs: list[str], *, model: str, params: Mapping[str, Any]) -> EmbeddingRequest:
        """A request of ``inputs`` (already checked) with the endpoint ``params``.

        Raises:
            ValueError, TypeError: a parameter is invalid (named in the message).
        """
        check_model(model)
        if not inputs:
            raise ValueError("texts is empty; pass at least one string")
        if len(inputs) > MAX_BATCH_SIZE:
            raise ValueError(
                f"texts has {len(inputs)} items; one request takes at most {MAX_BATCH_SIZE} "
                "(use embed_batch for more)"
            )
        encoding = params.get("encoding_format", "base64")
        if encoding not in ("base64", "float"):
            raise ValueError(f"encoding_format must be 'float' or 'base64', got {encoding!r}")
        dimensions = params.get("dimensions")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
        ):
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        body = {
            key: value
            for key, value in params.items()
            if key not in _REQUEST_OPTIONS and key != "extra_body"
        }
        body.update(params.get("extra_body") or {})
        body.update(model=model, input=inputs, encoding_format=encoding)
        options = {
            option: params[key]
            for key, option in _REQUEST_OPTIONS.items()
            if params.get(key) is not None
        }
        return cls(
            inputs=inputs,
            body=body,
            options=options,
            dimensions=dimensions,
            content=None if options else _json_content(body),
        )


@dataclass(frozen=True, slots=True)
class EmbeddingsCall:
    """One embeddings request; answers :class:`EmbeddingsPayload`.

    Attributes:
        request: what to send.
        tokens: its token cost (an upper bound), for rate limiters.
    """

    request: EmbeddingRequest
    tokens: int = 0
    operation: str = "embeddings"

    def _decode(self, body: bytes) -> EmbeddingsPayload:
        return decode_embeddings(body, len(self.request.inputs), dimensions=self.request.dimensions)

    def _direct(self, official: Any, direct: bool) -> tuple[JsonRoute, bytes] | None:
        """The direct route and the encoded body, where both exist."""
        content = self.request.content
        route = json_route(official, "embeddings") if direct and content is not None else None
        return None if route is None or content is None else (route, content)

    def _sdk_post(self) -> dict[str, Any]:
        """``official.post``'s arguments: the SDK builds the request (any option it knows)."""
        return {
            "body": self.request.body,
            "options": self.request.options,
            "cast_to": httpx.Response,
        }

    def send(self, official: Any, direct: bool = False) -> bytes:
        """The request on the wire: the raw body of the answer (:meth:`read` checks it).

        ``direct``: ``official`` was built by the library itself, so the request may skip the
        SDK's machinery (:class:`~._direct.JsonRoute`).
        """
        route = self._direct(official, direct)
        if route is not None:
            return route[0].post(route[1])
        body: bytes = official.post("/embeddings", **self._sdk_post()).content
        return body

    async def asend(self, official: Any, direct: bool = False) -> bytes:
        route = self._direct(official, direct)
        if route is not None:
            return await route[0].apost(route[1])
        body: bytes = (await official.post("/embeddings", **self._sdk_post())).content
        return body

    def read(self, body: bytes) -> EmbeddingsPayload:
        """The checked answer: decoded once the request is off the wire (its slot free)."""
        return self._decode(body)

    async def aread(self, body: bytes) -> EmbeddingsPayload:
        if len(body) > _DECODE_OFF_LOOP_BYTES:
            return await anyio.to_thread.run_sync(self._decode, body)
        return self._decode(body)


# --- chat ------------------------------------------------------------------------------------


def _estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    # For rate limiters only: a cheap bound, not a count (four bytes a token is typical).
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
    return size // 4 + 4 * len(messages)


ChatAnswer = Literal["completion", "text", "stream"]


@contextlib.contextmanager
def _answer_parsed() -> Iterator[None]:
    """The SDK parses a 200 answer itself and lets ``json.JSONDecodeError`` out when the body
    is not JSON: that is an answer failing its checks, retried like a 5xx."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise InvalidResponse(f"the chat answer is not JSON ({exc}); is base_url right?") from exc


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat completion through the official method.

    Attributes:
        params: the arguments of ``chat.completions.create``.
        answer: what the call answers: the checked ``ChatCompletion`` (``chat``), its text as a
            :class:`TextAnswer` (``complete``, ``summarize``, batches), or the opened stream
            (:class:`~._streams.Opened`: its first chunk was read within the attempt).
    """

    params: dict[str, Any]
    tokens: int = 0
    answer: ChatAnswer = "completion"
    operation: str = "chat.completions"

    @classmethod
    def of(cls, params: dict[str, Any], answer: ChatAnswer = "completion") -> ChatCall:
        if answer == "stream":
            params = {**params, "stream": True}
        return cls(params, _estimate_tokens(params.get("messages") or ()), answer)

    def _read(self, created: Any) -> Any:
        completion = check_completion(created)
        return TextAnswer.of(completion) if self.answer == "text" else completion

    def send(self, official: Any, direct: bool = False) -> Any:
        with _answer_parsed():
            created = official.chat.completions.create(**self.params)
        return open_first(created) if self.answer == "stream" else self._read(created)

    async def asend(self, official: Any, direct: bool = False) -> Any:
        with _answer_parsed():
            created = await official.chat.completions.create(**self.params)
        return await aopen_first(created) if self.answer == "stream" else self._read(created)

    def read(self, answer: Any) -> Any:
        return answer

    async def aread(self, answer: Any) -> Any:
        return answer


@dataclass(frozen=True, slots=True)
class FunctionCall(Generic[R]):
    """``fn(official, *args, **kwargs)``: the escape hatch for any endpoint (``client.call``)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] | None = None
    tokens: int = 0

    @property
    def operation(self) -> str | None:
        name = getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", None)
        if not isinstance(name, str) or "<lambda>" in name:
            return None  # named after the endpoint the request reaches
        return name

    def send(self, official: Any, direct: bool = False) -> R | Opened:
        result = self.fn(official, *self.args, **(self.kwargs or {}))
        # A stream (responses.create(stream=True), say) is opened within the attempt.
        return open_first(result) if is_official_stream(result) else cast(R, result)

    async def asend(self, official: Any, direct: bool = False) -> R | Opened:
        result = await self.fn(official, *self.args, **(self.kwargs or {}))
        return await aopen_first(result) if is_official_stream(result) else cast(R, result)

    def read(self, answer: R | Opened) -> R | Opened:
        return answer

    async def aread(self, answer: R | Opened) -> R | Opened:
        return answer
