"""The one module of `batch_api` that reaches into the library's internals.

Everything else in this package imports public names from `resilient_llm` and these few from
here, so that a restructure of the core re-points them in one place:

- `BatchAccountant`: records every input's outcome exactly once and builds the `BatchResult`.
- `decode_embeddings`: the embeddings answer check (one vector per input, indices, lengths,
  finite values). It moves to ``resilient_llm._endpoints.decode_embeddings(body, expected,
  dimensions=...)``; until then the checks the old decoder lacks are made here.
- `completion_text`: the text of a chat answer, never ``""``.
- `check_messages`, `prompt_messages`, `summary_messages`: how the facades build chat requests.
- `preview`: the bounded, printable preview of an input that failure records show.
- `httpx`: the HTTP package openai runs on, for the ``Response`` an SDK error is built on.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._batch import BatchAccountant, preview
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
    "preview",
    "prompt_messages",
    "summary_messages",
]

#: What the answer checks raise (``resilient_llm.InvalidResponse`` once the core has it).
InvalidAnswer = ResilientLLMError


def decode_embedding(
    body: dict[str, Any], count: int, *, dimensions: int | None
) -> EmbeddingsPayload:
    """Check and decode the ``/embeddings`` answer to a request of `count` inputs.

    Raises:
        ResilientLLMError: the answer does not hold exactly one non-empty, finite vector per
            input (each `dimensions` long when given, all one length), indices 0 to count - 1.
    """
    data = body.get("data")
    if not isinstance(data, list) or len(data) != count:
        found = len(data) if isinstance(data, list) else 0
        raise InvalidAnswer(f"embeddings answer holds {found} vectors for {count} inputs")
    indices = [entry.get("index") if isinstance(entry, dict) else None for entry in data]
    numbers = [i for i in indices if isinstance(i, int) and not isinstance(i, bool)]
    if len(numbers) != count or sorted(numbers) != list(range(count)):
        raise InvalidAnswer("embeddings answer has missing or repeated indices")
    payload = _decode_embeddings(json.dumps(body).encode(), count)
    lengths = {len(vector) for vector in payload.vectors}
    if 0 in lengths:
        raise InvalidAnswer("embeddings answer holds an empty vector")
    if len(lengths) > 1 or (dimensions is not None and lengths != {dimensions}):
        raise InvalidAnswer(
            f"embeddings answer holds vectors of {sorted(lengths)} values, not {dimensions}"
        )
    if not all(math.isfinite(value) for vector in payload.vectors for value in vector):
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
