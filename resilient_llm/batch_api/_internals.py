"""The one module of `batch_api` that reaches into the library's internals.

Everything else in this package imports public names from `resilient_llm` and these few from
here:

- `BatchAccountant`: records every input's outcome exactly once and builds the `BatchResult`.
- `decode_embedding`: the embeddings answer check every path uses (one vector per input, every
  index in range and once, non-empty finite vectors of one length, `dimensions` when given).
- `completion_text`: the text of a chat answer, never ``""``.
- `check_messages`, `prompt_messages`, `summary_messages`: how the facades build chat requests.
- `preview`: the bounded, printable preview of an input that failure records show.
- `httpx`: the HTTP package openai runs on, for the ``Response`` an SDK error is built on.
"""

from __future__ import annotations

from typing import Any

from .._answers import EmbeddingsPayload, check_embeddings, completion_text
from .._batch.accounting import BatchAccountant
from .._batch.results import preview
from .._exceptions import InvalidResponse
from .._http import httpx
from .._inputs import check_messages, prompt_messages, summary_messages

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

#: What the answer checks raise.
InvalidAnswer = InvalidResponse


def decode_embedding(
    body: dict[str, Any], count: int, *, dimensions: int | None
) -> EmbeddingsPayload:
    """Check and decode the ``/embeddings`` answer to a request of `count` inputs.

    Raises:
        InvalidResponse: the answer does not hold exactly one non-empty, finite vector per
            input (each `dimensions` long when given, all one length), indices 0 to count - 1.
    """
    return check_embeddings(body, count, dimensions=dimensions)
