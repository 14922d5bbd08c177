"""How an answer is trusted: embeddings decoded and checked, chat completions checked.

- :func:`decode_embeddings` checks an embeddings answer before any vector is returned: one vector
  per input, every index in range and unique, every vector non-empty, finite and of one length
  (the requested ``dimensions`` when given); a 200 whose body is an ``error`` is that error;
- :func:`check_completion` / :func:`completion_text` check a chat answer: a first choice, and
  non-empty text where text is expected.

A failed check raises :class:`InvalidResponse`, inside the attempt, so it is retried like a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion

from ._exceptions import InvalidResponse
from ._inputs import preview_text

__all__ = [
    "EmbeddingsPayload",
    "TextAnswer",
    "check_completion",
    "check_embeddings",
    "completion_text",
    "decode_embeddings",
]


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
