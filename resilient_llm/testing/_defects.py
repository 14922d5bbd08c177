"""Integrity defects injected into otherwise normal answers (no I/O).

Real servers return 200s that are wrong: a vector missing, an index out of range or repeated,
an empty or short vector, NaN in the floats, a chat answer with no text. These functions build
them from the answer the server would have sent, so they fit any request they hit.
"""

from __future__ import annotations

import array
import base64
import json
import math
import sys
from typing import Any, Literal, get_args

__all__ = [
    "CHAT_DEFECTS",
    "EMBEDDING_DEFECTS",
    "REFUSAL_TEXT",
    "TOOL_NAME",
    "ChatDefect",
    "EmbeddingDefect",
    "alter_embeddings",
    "tool_arguments",
]

EmbeddingDefect = Literal[
    "missing",
    "index_negative",
    "index_too_large",
    "duplicate_index",
    "empty_vector",
    "short_vector",
    "nan",
    "infinity",
    "reversed",
]
ChatDefect = Literal[
    "empty", "content_filter", "refusal", "tool_calls", "no_choices", "missing_choices"
]
EMBEDDING_DEFECTS: tuple[str, ...] = get_args(EmbeddingDefect)
CHAT_DEFECTS: tuple[str, ...] = get_args(ChatDefect)

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
TOOL_NAME = "lookup"


def tool_arguments(text: str) -> str:
    """The JSON arguments of the function call a ``tool_calls`` answer makes for `text`."""
    return json.dumps({"query": " ".join(text.split()[:8])})


def _floats(encoded: str) -> array.array[float]:
    vector = array.array("f", base64.b64decode(encoded))
    if sys.byteorder != "little":
        vector.byteswap()
    return vector


def _encode(vector: array.array[float]) -> str:
    if sys.byteorder != "little":
        vector = array.array("f", vector)
        vector.byteswap()
    return base64.b64encode(vector.tobytes()).decode("ascii")


def _poison_value(embedding: Any, value: float) -> Any:
    if isinstance(embedding, str):
        vector = _floats(embedding)
        vector[len(vector) // 2] = value
        return _encode(vector)
    embedding[len(embedding) // 2] = value
    return embedding


def alter_embeddings(body: bytes, defect: str, at: int) -> bytes:
    """Apply `defect` to a normal ``CreateEmbeddingResponse`` body.

    Args:
        body: The answer the server would have sent.
        defect: An `EmbeddingDefect` (see `Fault.embeddings`).
        at: Position in ``data`` of the entry it hits (negative counts from the end).

    Returns:
        The defective body (JSON, with bare ``NaN`` / ``Infinity`` where asked).

    Raises:
        ValueError: If `at` is outside ``data`` or the defect is unknown.
    """
    document = json.loads(body)
    data: list[dict[str, Any]] = document["data"]
    count = len(data)
    position = at + count if at < 0 else at
    if not 0 <= position < count:
        raise ValueError(f"Fault.embeddings(at={at}) is outside an answer of {count} vectors")
    entry = data[position]
    embedding = entry["embedding"]
    if defect == "missing":
        del data[position]
    elif defect == "index_negative":
        data.append({**entry, "index": -1})
    elif defect == "index_too_large":
        data.append({**entry, "index": count})
    elif defect == "duplicate_index":
        if count == 1:
            data.append(dict(entry))
        else:
            entry["index"] = data[position - 1 if position else 1]["index"]
    elif defect == "empty_vector":
        entry["embedding"] = "" if isinstance(embedding, str) else []
    elif defect == "short_vector":
        if isinstance(embedding, str):
            entry["embedding"] = _encode(_floats(embedding)[:-1])
        else:
            entry["embedding"] = embedding[:-1]
    elif defect == "nan":
        entry["embedding"] = _poison_value(embedding, math.nan)
    elif defect == "infinity":
        entry["embedding"] = _poison_value(embedding, math.inf)
    elif defect == "reversed":
        data.reverse()
    else:
        raise ValueError(f"unknown embeddings defect {defect!r}")
    # allow_nan (the default) writes NaN and Infinity as bare words, as those servers do.
    return json.dumps(document).encode()
