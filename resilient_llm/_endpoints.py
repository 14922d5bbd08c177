"""What each endpoint sends and how its answer is checked; the calls both facades execute.

Every path (single calls, batches, ``map`` helpers, the command line, the adapters) builds its
requests and reads its answers here, so an input is checked, and an answer trusted, the same way
everywhere:

- :func:`text_problem` is the one text check (type, blank, lone surrogates);
- :func:`decode_embeddings` checks an embeddings answer before any vector is returned: one vector
  per input, every index in range and unique, every vector non-empty, finite and of one length
  (the requested ``dimensions`` when given); a 200 whose body is an ``error`` is that error;
- :func:`check_completion` / :func:`completion_text` check a chat answer: a first choice, and
  non-empty text where text is expected.

A failed check raises :class:`InvalidResponse`, inside the attempt, so it is retried like a 5xx.

A *call* (:class:`EmbeddingsCall`, :class:`ChatCall`, :class:`FunctionCall`) is one logical
request: ``send(official)`` puts it on the wire with a sync official client, ``asend`` with an
async one (the twins differ only by ``await``), and ``read`` / ``aread`` turn what came back into
the checked answer once the request is off the wire (in a batch: its concurrency slot given back,
so decoding a large answer never holds up the next request).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import sys
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import anyio.to_thread
from openai.types.chat import ChatCompletion

from ._config import MAX_BATCH_SIZE, check_model
from ._exceptions import InvalidInput, InvalidResponse
from ._http import httpx, json_route
from ._streams import Opened, aopen_first, is_official_stream, open_first

__all__ = [
    "COMBINE_INSTRUCTIONS",
    "DEFAULT_SUMMARY_INSTRUCTIONS",
    "MAX_EMBEDDING_INPUT_TOKENS",
    "ChatAnswer",
    "ChatCall",
    "EmbeddingRequest",
    "EmbeddingsCall",
    "EmbeddingsPayload",
    "FunctionCall",
    "TextAnswer",
    "check_completion",
    "check_embeddings",
    "check_messages",
    "check_text",
    "completion_text",
    "decode_embeddings",
    "preview_text",
    "prompt_messages",
    "summary_messages",
    "text_problem",
    "utf8_length",
]

R = TypeVar("R")

#: Per-input limit of OpenAI's embedding models.
MAX_EMBEDDING_INPUT_TOKENS = 8191

DEFAULT_SUMMARY_INSTRUCTIONS = (
    "Summarize the text below. Keep the facts, names and numbers that matter; leave out filler. "
    "Answer with the summary only."
)

COMBINE_INSTRUCTIONS = (
    "The text below is a series of summaries of consecutive parts of one document. "
    "Combine them into one summary of the whole document."
)

# Bodies larger than this are decoded in a worker thread rather than on an event loop: about
# half a millisecond of decoding, where the hop to the thread is already cheap next to it (a
# 100-input answer of 256 dimensions is ~140 KB; decoding those off the loop makes the pinned
# async batch ~9% faster, the loop free to send the next requests meanwhile).
_DECODE_OFF_LOOP_BYTES = 64 * 1024


# --- inputs ----------------------------------------------------------------------------------


def text_problem(value: object) -> str | None:
    """What makes ``value`` unsendable as a text, or ``None`` when it is fine.

    Not a string, empty, whitespace only, or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(value, str):
        kind = type(value).__name__
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"expected str, got {kind}; decode it first (for example data.decode('utf-8'))"
        return f"expected str, got {kind}"
    if not value:
        return "empty string"
    if value.isspace():
        return f"whitespace-only string ({len(value)} characters)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"cannot be encoded as UTF-8: lone surrogate U+{ord(value[exc.start]):04X} "
                f"at position {exc.start}"
            )
    return None


def check_text(value: object, name: str) -> str:
    """``value`` if it is a sendable text; raise naming ``name`` otherwise.

    Raises:
        TypeError: not a string.
        InvalidInput: empty, whitespace only, or a lone surrogate.
    """
    problem = text_problem(value)
    if problem is None:
        return cast(str, value)
    if not isinstance(value, str):
        raise TypeError(f"{name}: {problem}")
    raise InvalidInput(f"{name}: {problem}")


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8: an upper bound of its token count for byte-level BPE."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def check_messages(messages: object) -> list[Mapping[str, Any]]:
    """Validate chat ``messages``: a list of dicts, each with a string ``role``."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of dicts like [{'role': 'user', 'content': 'Hi'}], "
            f"not {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages must not be empty")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(
                f"messages[{position}] must be a dict with 'role' and 'content', "
                f"not {type(message).__name__}"
            )
        if not isinstance(message.get("role"), str):
            raise TypeError(f"messages[{position}] has no string 'role'")
        content = message.get("content")
        if isinstance(content, str) and text_problem(content) is not None and content.strip():
            raise InvalidInput(f"messages[{position}].content: {text_problem(content)}")
    return list(messages)


def prompt_messages(prompt: object, system: object) -> list[dict[str, str]]:
    """Messages for ``complete(prompt, system=...)``."""
    text = check_text(prompt, "prompt")
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": check_text(system, "system")})
    messages.append({"role": "user", "content": text})
    return messages


def summary_guidance(instructions: object, max_words: object, *, combine: bool = False) -> str:
    """The system message of a summary: instructions, and the word limit if any."""
    guidance = DEFAULT_SUMMARY_INSTRUCTIONS
    if instructions is not None:
        guidance = check_text(instructions, "instructions")
    if combine:
        guidance = COMBINE_INSTRUCTIONS + (f"\n{instructions}" if instructions else "")
    if max_words is not None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {max_words!r}")
        guidance = f"{guidance}\nUse at most {max_words} words."
    return guidance


def summary_messages(
    text: object, instructions: object, max_words: object, *, combine: bool = False
) -> list[dict[str, str]]:
    """Messages for a summary: instructions as the system message, the text as the user's."""
    body = check_text(text, "text")
    return [
        {"role": "system", "content": summary_guidance(instructions, max_words, combine=combine)},
        {"role": "user", "content": body},
    ]


def preview_text(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


# --- embeddings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbeddingsPayload:
    """A checked embeddings answer."""

    vectors: list[list[float]]
    prompt_tokens: int
    total_tokens: int


def _error_message(document: Mapping[str, Any]) -> str:
    error = document.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        text = message if isinstance(message, str) else json.dumps(error)[:300]
        return f"{text} (code {code})" if code else text
    return str(error)[:300]


def _error_is_transient(document: Mapping[str, Any]) -> bool:
    error = document.get("error")
    if not isinstance(error, Mapping):
        return True
    kind = f"{error.get('type')} {error.get('code')}".lower()
    return not any(word in kind for word in ("invalid", "auth", "permission", "not_found"))


if sys.version_info >= (3, 11):

    def _b64decode(encoded: str) -> bytes:
        return binascii.a2b_base64(encoded, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _b64decode(encoded: str) -> bytes:
        return base64.b64decode(encoded, validate=True)


def _floats_from_base64(encoded: str) -> list[float]:
    values = array("f")
    values.frombytes(_b64decode(encoded))
    if sys.byteorder == "big":  # the API sends little-endian float32
        values.byteswap()
    return values.tolist()


# The byte of a little-endian float32 that holds its sign and the top seven bits of its exponent:
# a value can be NaN or infinite (exponent all ones) only where that byte is 0x7F or 0xFF.
_HIGH_BYTES = slice(3, None, 4)


def _maybe_not_finite(raw: bytes) -> bool:
    high = raw[_HIGH_BYTES]
    return b"\x7f" in high or b"\xff" in high


def decode_embeddings(
    body: bytes | str, expected: int, *, dimensions: int | None = None
) -> EmbeddingsPayload:
    """Decode and check a raw ``/embeddings`` body (float or base64): vectors in input order.

    Raises:
        InvalidResponse: the answer is not JSON, is an error, or fails a check (count, index
            range and uniqueness, non-empty finite vectors of one length).
    """
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidResponse(
            f"the embeddings answer is not JSON ({exc}); is base_url right?"
        ) from exc
    return check_embeddings(document, expected, dimensions=dimensions)


def check_embeddings(
    document: object, expected: int, *, dimensions: int | None = None
) -> EmbeddingsPayload:
    """Check a parsed ``/embeddings`` answer (a Batch API output line's body, say).

    Raises:
        InvalidResponse: see :func:`decode_embeddings`.
    """
    if not isinstance(document, dict):
        raise InvalidResponse(
            f"the embeddings answer is a {type(document).__name__}, not an object"
        )
    data = document.get("data")
    if data is None and "error" in document:
        raise InvalidResponse(
            f"the server answered 200 with an error: {_error_message(document)}",
            retryable=_error_is_transient(document),
        )
    if not isinstance(data, list):
        raise InvalidResponse("the embeddings answer has no 'data' list")
    if len(data) != expected:
        raise InvalidResponse(
            f"the embeddings answer has {len(data)} vectors for {expected} inputs"
        )
    vectors = _base64_vectors(data, expected, dimensions)
    if vectors is None:
        vectors = _float_vectors(data, expected, dimensions)
    usage = document.get("usage") or {}
    if not isinstance(usage, dict):
        usage = {}
    return EmbeddingsPayload(
        vectors=vectors,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        total_tokens=_int(usage.get("total_tokens")),
    )


def _entry_index(entry: object, expected: int, seen: list[Any]) -> int:
    index = entry.get("index") if isinstance(entry, dict) else None
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < expected:
        raise InvalidResponse(
            f"the embeddings answer has a vector at index {index!r}, outside 0..{expected - 1}"
        )
    if seen[index] is not None:
        raise InvalidResponse(f"the embeddings answer has index {index} twice")
    return index


def _check_length(index: int, size: int, length: int | None, dimensions: int | None) -> int:
    if not size:
        raise InvalidResponse(f"the vector at index {index} is empty")
    if length is not None and size != length:
        wanted = "dimensions" if dimensions is not None else "the other vectors"
        raise InvalidResponse(f"the vector at index {index} has {size} values; {wanted}: {length}")
    return size


def _not_finite(index: int) -> InvalidResponse:
    return InvalidResponse(f"the vector at index {index} holds NaN or infinity")


def _base64_vectors(
    data: list[Any], expected: int, dimensions: int | None
) -> list[list[float]] | None:
    """The vectors of base64 entries: decoded to bytes and checked, then turned into floats in
    one array (the costly part of an answer is making its Python floats). ``None`` if an entry
    is not base64 (the answer is read entry by entry then)."""
    raws: list[Any] = [None] * expected
    length = dimensions
    for entry in data:
        index = _entry_index(entry, expected, raws)
        embedding = entry.get("embedding")
        if not isinstance(embedding, str):
            return None
        try:
            raw = _b64decode(embedding)
        except (ValueError, binascii.Error) as exc:
            raise InvalidResponse(f"the vector at index {index} cannot be read: {exc}") from exc
        if len(raw) % 4:
            raise InvalidResponse(
                f"the vector at index {index} cannot be read: {len(raw)} bytes is not a whole "
                "number of float32 values"
            )
        length = _check_length(index, len(raw) // 4, length, dimensions)
        raws[index] = raw
    joined = b"".join(raws)
    values = array("f")
    values.frombytes(joined)
    if sys.byteorder == "big":  # the API sends little-endian float32
        values.byteswap()
    assert length is not None
    vectors = [values[start : start + length].tolist() for start in range(0, len(values), length)]
    if _maybe_not_finite(joined):
        # Only values of magnitude 2**127 and above get here: find the culprit precisely.
        for index, vector in enumerate(vectors):
            if not math.isfinite(sum(vector)):
                raise _not_finite(index)
    return vectors


def _float_vectors(data: list[Any], expected: int, dimensions: int | None) -> list[list[float]]:
    vectors: list[Any] = [None] * expected
    length = dimensions
    for entry in data:
        index = _entry_index(entry, expected, vectors)
        embedding = entry.get("embedding")
        try:
            if isinstance(embedding, str):
                vector = _floats_from_base64(embedding)
            elif isinstance(embedding, list):
                vector = array("d", embedding).tolist()
            else:
                raise TypeError(f"embedding is a {type(embedding).__name__}")
        except (TypeError, ValueError, binascii.Error) as exc:
            raise InvalidResponse(f"the vector at index {index} cannot be read: {exc}") from exc
        length = _check_length(index, len(vector), length, dimensions)
        # One C-speed sum: NaN and infinity propagate through it, finite float32 values cannot
        # overflow a float64 sum of any realistic length.
        if not math.isfinite(sum(vector)):
            raise _not_finite(index)
        vectors[index] = vector
    return vectors


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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

    def send(self, official: Any, direct: bool = False) -> bytes:
        """The request on the wire: the raw body of the answer (:meth:`read` checks it).

        ``direct``: ``official`` was built by the library itself, so the request may skip the
        SDK's machinery (:class:`~._http.JsonRoute`).
        """
        content = self.request.content
        route = json_route(official, "embeddings") if direct and content is not None else None
        if route is not None:
            assert content is not None
            return route.post(content)
        response = official.post(
            "/embeddings",
            body=self.request.body,
            options=self.request.options,
            cast_to=httpx.Response,
        )
        body: bytes = response.content
        return body

    async def asend(self, official: Any, direct: bool = False) -> bytes:
        content = self.request.content
        route = json_route(official, "embeddings") if direct and content is not None else None
        if route is not None:
            assert content is not None
            return await route.apost(content)
        response = await official.post(
            "/embeddings",
            body=self.request.body,
            options=self.request.options,
            cast_to=httpx.Response,
        )
        body: bytes = response.content
        return body

    def read(self, body: bytes) -> EmbeddingsPayload:
        """The checked answer: decoded once the request is off the wire (its slot free)."""
        return self._decode(body)

    async def aread(self, body: bytes) -> EmbeddingsPayload:
        if len(body) > _DECODE_OFF_LOOP_BYTES:
            return await anyio.to_thread.run_sync(self._decode, body)
        return self._decode(body)


# --- chat ------------------------------------------------------------------------------------


def check_completion(value: Any) -> ChatCompletion:
    """``value`` if it is a chat completion with a first choice; :class:`InvalidResponse` if not.

    The official client returns the raw text when a 200 answer is not JSON (an HTML page from a
    proxy, say), and builds a completion without choices from a 200 ``{"error": ...}`` body.
    """
    if not isinstance(value, ChatCompletion):
        raise InvalidResponse(
            "the server answered 200 with something that is not a chat completion "
            f"({type(value).__name__}: {preview_text(value)}); is base_url right?"
        )
    extra = value.model_extra or {}
    if "error" in extra and not value.choices:
        raise InvalidResponse(
            f"the server answered 200 with an error: {_error_message(extra)}",
            retryable=_error_is_transient(extra),
        )
    if not value.choices or value.choices[0] is None:
        raise InvalidResponse("the chat answer has no choices")
    return value


def completion_text(completion: ChatCompletion) -> str:
    """The non-empty text of the first choice.

    Raises:
        InvalidResponse: no text. Not retryable when the answer explains itself: a content
            filter, a refusal, tool calls (the reason is in the message); retryable otherwise.
    """
    choice = check_completion(completion).choices[0]
    message = choice.message
    content = getattr(message, "content", None)
    if isinstance(content, str) and content.strip():
        return content
    finish = getattr(choice, "finish_reason", None)
    refusal = getattr(message, "refusal", None)
    if finish == "content_filter":
        raise InvalidResponse(
            "the answer was withheld by the server's content filter "
            "(finish_reason='content_filter')",
            retryable=False,
        )
    if refusal:
        raise InvalidResponse(f"the model refused: {refusal}", retryable=False)
    if getattr(message, "tool_calls", None):
        raise InvalidResponse(
            "the model answered with tool calls instead of text (finish_reason="
            f"{finish!r}); pass tools only to chat()",
            retryable=False,
        )
    raise InvalidResponse(f"the model returned no text (finish_reason={finish!r})")


def _estimate_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    # For rate limiters only: a cheap bound, not a count (four bytes a token is typical).
    size = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
    return size // 4 + 4 * len(messages)


@dataclass(frozen=True, slots=True)
class TextAnswer:
    """The text of a chat answer, with its usage."""

    text: str
    prompt_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, completion: ChatCompletion) -> TextAnswer:
        usage = completion.usage
        return cls(
            completion_text(completion),
            usage.prompt_tokens if usage else 0,
            usage.total_tokens if usage else 0,
        )


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
