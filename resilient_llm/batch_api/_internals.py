"""The one module of `batch_api` that reaches into the library's internals.

Everything else in this package imports public names from `resilient_llm` and these few from
here, so that a restructure of the core re-points them in one place:

- `BatchAccountant`: records every input's outcome exactly once and builds the `BatchResult`.
- `decode_embeddings`: the embeddings answer check (one vector per input, indices, lengths,
  finite values). It moves to ``resilient_llm._endpoints.decode_embeddings(body, expected,
  dimensions=...)``; until then the checks the old decoder lacks are made here.
- `completion_text`: the text of a chat answer, never ``""``.
- `check_messages`, `prompt_messages`, `summary_messages`: how the facades build chat requests.
- `httpx`: the HTTP package openai runs on, for the ``Response`` an SDK error is built on.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._batch import BatchAccountant
from .._exceptions import ResilientLLMError
from .._http import httpx
from .._operations import EmbeddingsPayload, check_messages, prompt_messages, summary_messages
from .._operations import completion_text as _completion_text
from .._operations import decode_embeddings as _decode_embeddings

__all__ = [
    "BatchAccountant",
    "EmbeddingsPayload",
    "InvalidAnswer",
    "check_messages",
    "completion_text",
    "decode_embedding",
    "httpx",
    "prompt_messages",
    "summary_messages",
]

#: What the answer checks raise (``resilient_llm.InvalidResponse`` once the core has it).
InvalidAnswer = ResilientLLMError


def decode_embedding(body: dict[str, Any], *, dimensions: int | None) -> EmbeddingsPayload:
    """Check and decode the ``/embeddings`` answer to a one-input request.

    Raises:
        ResilientLLMError: the answer is not exactly one non-empty, finite vector (of
            `dimensions` values when given).
    """
    data = body.get("data")
    if not isinstance(data, list) or len(data) != 1 or data[0].get("index", 0) != 0:
        count = len(data) if isinstance(data, list) else 0
        raise InvalidAnswer(f"embeddings answer holds {count} vectors for 1 input")
    payload = _decode_embeddings(json.dumps(body).encode(), 1)
    vector = payload.vectors[0]
    if not vector:
        raise InvalidAnswer("embeddings answer holds an empty vector")
    if dimensions is not None and len(vector) != dimensions:
        raise InvalidAnswer(
            f"embeddings answer holds a vector of {len(vector)} values, not {dimensions}"
        )
    if not all(math.isfinite(value) for value in vector):
        raise InvalidAnswer("embeddings answer holds a non-finite value")
    return payload


def completion_text(completion: Any) -> str:
    """The text of the first choice; raises when there is none or it is blank.

    The error has ``retryable = False`` when the answer explains itself (content filter,
    refusal, tool calls): asking again cannot help.
    """
    try:
        text = _completion_text(completion)
    except ResilientLLMError as exc:
        if not hasattr(exc, "retryable"):
            choices = getattr(completion, "choices", None) or []
            message = choices[0].message if choices else None
            explained = bool(choices) and (
                choices[0].finish_reason == "content_filter"
                or bool(getattr(message, "refusal", None))
                or bool(getattr(message, "tool_calls", None))
            )
            setattr(exc, "retryable", not explained)  # noqa: B010
        raise
    if not text.strip():
        raise InvalidAnswer(
            f"the model returned empty text (finish_reason={completion.choices[0].finish_reason!r})"
        )
    return text
