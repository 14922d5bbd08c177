"""What each endpoint sends and how its answer is read: validation and decoding, no I/O.

Both facades call these, so a bad argument fails the same way, before anything is sent, in sync
and async code alike.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletion

from ._exceptions import InvalidInput, ResilientLLMError
from ._http import httpx

__all__ = [
    "check_completion",
    "send_embeddings",
    "send_embeddings_async",
    "DEFAULT_SUMMARY_INSTRUCTIONS",
    "EmbeddingRequest",
    "EmbeddingsPayload",
    "check_messages",
    "completion_text",
    "decode_embeddings",
    "prompt_messages",
    "summary_messages",
]

DEFAULT_SUMMARY_INSTRUCTIONS = (
    "Summarize the text below. Keep the facts, names and numbers that matter; leave out filler. "
    "Answer with the summary only."
)


COMBINE_INSTRUCTIONS = (
    "The text below is a series of summaries of consecutive parts of one document. "
    "Combine them into one summary of the whole document."
)


def _check_model(model: object, name: str = "model") -> str:
    if not isinstance(model, str) or not model.strip():
        raise TypeError(f"{name} must be a non-empty string, got {model!r}")
    return model


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
    return list(messages)


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        hint = " (decode bytes first)" if isinstance(value, (bytes, bytearray)) else ""
        raise TypeError(f"{name} must be a str, not {type(value).__name__}{hint}")
    if not value.strip():
        raise InvalidInput(f"{name} is empty or whitespace only; nothing to send")
    return value


def prompt_messages(prompt: object, system: object) -> list[dict[str, str]]:
    """Messages for ``complete(prompt, system=...)``."""
    text = _check_text(prompt, "prompt")
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": _check_text(system, "system")})
    messages.append({"role": "user", "content": text})
    return messages


def summary_messages(text: object, instructions: object, max_words: object) -> list[dict[str, str]]:
    """Messages for ``summarize``: instructions as the system message, the text as the user's."""
    body = _check_text(text, "text")
    guidance = DEFAULT_SUMMARY_INSTRUCTIONS
    if instructions is not None:
        guidance = _check_text(instructions, "instructions")
    if max_words is not None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {max_words!r}")
        guidance = f"{guidance}\nUse at most {max_words} words."
    return [{"role": "system", "content": guidance}, {"role": "user", "content": body}]


def check_completion(value: Any) -> ChatCompletion:
    """The official client returns the raw text when a 200 answer is not JSON (an HTML page
    from a proxy, say); that is an error, not a completion."""
    if isinstance(value, ChatCompletion):
        return value
    raise ResilientLLMError(
        "the server answered 200 with something that is not a chat completion "
        f"({type(value).__name__}: {preview_text(value)}); is base_url right?"
    )


def preview_text(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def completion_text(completion: Any) -> str:
    """The text of the first choice; an answer without text is an error, never ``""``."""
    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise ResilientLLMError("the model returned no choices")
    message = choices[0].message
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        refusal = getattr(message, "refusal", None)
        detail = f"; refusal: {refusal}" if refusal else ""
        raise ResilientLLMError(
            f"the model returned no text (finish_reason={choices[0].finish_reason!r}){detail}"
        )
    return content


@dataclass(frozen=True, slots=True)
class EmbeddingsPayload:
    """A decoded embeddings response."""

    vectors: list[list[float]]
    prompt_tokens: int
    total_tokens: int


def send_embeddings(official: Any, request: EmbeddingRequest) -> bytes:
    """POST one embeddings request with the official sync client; the raw response body."""
    response = official.post(
        "/embeddings", body=request.body, options=request.options, cast_to=httpx.Response
    )
    return bytes(response.content)


async def send_embeddings_async(official: Any, request: EmbeddingRequest) -> bytes:
    """The async twin of :func:`send_embeddings`."""
    response = await official.post(
        "/embeddings", body=request.body, options=request.options, cast_to=httpx.Response
    )
    return bytes(response.content)


def _floats_from_base64(encoded: str) -> list[float]:
    values = array("f")
    values.frombytes(base64.b64decode(encoded))
    if sys.byteorder == "big":  # the API sends little-endian float32
        values.byteswap()
    return values.tolist()


def decode_embeddings(body: bytes | str, expected: int) -> EmbeddingsPayload:
    """Decode a raw ``/embeddings`` body (float or base64) into vectors in input order.

    Decoding the body directly, instead of building the SDK's response models, is what makes the
    embedding path faster than the raw official client.
    """
    try:
        document = json.loads(body)
        data = document["data"]
        vectors: list[list[float] | None] = [None] * expected
        for entry in data:
            embedding = entry["embedding"]
            vectors[entry["index"]] = (
                _floats_from_base64(embedding)
                if isinstance(embedding, str)
                else [float(v) for v in embedding]
            )
        usage = document.get("usage") or {}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ResilientLLMError(f"malformed embeddings response: {exc!r}") from exc
    missing = [position for position, vector in enumerate(vectors) if vector is None]
    if missing:
        raise ResilientLLMError(
            f"embeddings response has {len(data)} vectors for {expected} inputs "
            f"(missing indices {missing[:5]})"
        )
    return EmbeddingsPayload(
        vectors=vectors,  # type: ignore[arg-type]  # no None left, checked above
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or 0),
    )


# The official methods' per-request options, and their names in the low-level request options.
_REQUEST_OPTIONS = {
    "extra_headers": "headers",
    "extra_query": "params",
    "timeout": "timeout",
    "extra_body": "",  # merged into the body
}


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated ``embed`` call: one string, or a sequence of strings sent in one request.

    Sent with the official client's low-level ``post`` and read as raw bytes: the SDK's request
    transformation walks every input through type introspection, and its response models cost
    more than the vectors; skipping both is what makes batches faster than the raw client.
    """

    inputs: list[str]
    single: bool
    body: dict[str, Any]
    options: dict[str, Any]

    @classmethod
    def build(cls, texts: object, *, model: str, params: Mapping[str, Any]) -> EmbeddingRequest:
        _check_model(model)
        if isinstance(texts, str):
            inputs = [_check_text(texts, "text")]
            single = True
        elif isinstance(texts, Sequence) and not isinstance(texts, (bytes, bytearray)):
            if not texts:
                raise ValueError("texts is empty; pass at least one string")
            if len(texts) > 2048:
                raise ValueError(
                    f"texts has {len(texts)} items; one request takes at most 2048 "
                    "(use embed_batch for more)"
                )
            inputs = [_check_text(text, f"texts[{i}]") for i, text in enumerate(texts)]
            single = False
        else:
            hint = " (decode bytes first)" if isinstance(texts, (bytes, bytearray)) else ""
            raise TypeError(
                f"texts must be a str or a sequence of str, not {type(texts).__name__}{hint}"
            )
        encoding = params.get("encoding_format", "base64")
        if encoding not in ("base64", "float"):
            raise ValueError(f"encoding_format must be 'float' or 'base64', got {encoding!r}")
        body = {key: value for key, value in params.items() if key not in _REQUEST_OPTIONS}
        body.update(params.get("extra_body") or {})
        body.update(model=model, input=inputs, encoding_format=encoding)
        options = {
            option: params[key]
            for key, option in _REQUEST_OPTIONS.items()
            if params.get(key) is not None and option
        }
        return cls(inputs=inputs, single=single, body=body, options=options)
