"""``POST /v1/embeddings``: its body checked, and its answer: a deterministic unit vector per
input (no I/O)."""

from __future__ import annotations

import array
import base64
import hashlib
import json
import math
import random
import sys
from functools import lru_cache

from ._limits import SizeLimits, context_refusal
from ._reply import JSON_HEADERS, Reply
from ._request import ApiRequest, check_model, estimate_tokens, invalid, load_object

__all__ = ["embedding_vector", "embeddings_reply", "parse_embeddings"]

MAX_EMBEDDING_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def parse_embeddings(req: ApiRequest, body: bytes, limits: SizeLimits | None) -> None:
    payload = load_object(req, body)
    if payload is None:
        return
    if "input" not in payload:
        req.error = invalid("'input' is a required property", "input")
        return
    raw = payload["input"]
    items: list[str | list[int]]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and _is_token_list(raw)):
        items = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) or _is_token_list(x) for x in raw):
        items = raw
    else:
        req.error = invalid("'$.input' is invalid. Please check the API reference.", "input")
        return
    req.n_inputs = len(items)
    if not items or any(len(x) == 0 for x in items):
        req.error = invalid("'$.input' is invalid. Please check the API reference.", "input")
        return
    refusal = None if limits is None else limits.check("inputs", len(items))
    if refusal is None and len(items) > MAX_EMBEDDING_INPUTS:
        # What OpenAI answers for more than 2048 inputs: it does not say why.
        refusal = invalid(
            "'$.input' is invalid. Please check the API reference: "
            "https://platform.openai.com/docs/api-reference."
        )
    if refusal is not None:
        req.error, req.size_limit = refusal, "inputs"
        return
    total = 0
    for item in items:
        if isinstance(item, str):
            req.texts.append(item)
            req.keys.append(item)
            tokens = estimate_tokens(item)
        else:
            req.keys.append("\x00tokens:" + ",".join(map(str, item)))
            tokens = len(item)
        refusal = None if limits is None else limits.check("input_tokens", tokens)
        if refusal is None and tokens > MAX_INPUT_TOKENS:
            refusal = context_refusal(MAX_INPUT_TOKENS, tokens)
        if refusal is not None:
            req.error, req.size_limit = refusal, "input_tokens"
            return
        total += tokens
    if total > MAX_REQUEST_TOKENS:
        req.error = invalid(
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request", "input"
        )
        req.size_limit = "request_tokens"
        return
    req.prompt_tokens = total

    assert req.model is not None
    native = 3072 if req.model.endswith("-large") else 1536
    dimensions = payload.get("dimensions")
    if dimensions is None:
        req.dimensions = native
    elif req.model == "text-embedding-ada-002":
        req.error = invalid("This model does not support specifying dimensions.", "dimensions")
        return
    elif (
        isinstance(dimensions, int)
        and not isinstance(dimensions, bool)
        and 1 <= dimensions <= native
    ):
        req.dimensions = dimensions
    else:
        req.error = invalid(
            f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {native}.",
            "dimensions",
        )
        return
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        req.error = invalid(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported: 'float', 'base64'.",
            "encoding_format",
        )
        return
    req.base64 = encoding == "base64"
    check_model(req)


@lru_cache(maxsize=8192)
def _embedding_json(key: str, dimensions: int, as_base64: bool) -> str:
    # Seeded by a stable hash (not `hash()`, which changes per process), so the same text gets
    # the same vector in every run; the first k values do not depend on `dimensions`, so a
    # shortened embedding is the renormalised prefix of the full one, as with OpenAI's models.
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    raw = [rng.random() - 0.5 for _ in range(dimensions)]
    norm = math.hypot(*raw) or 1.0
    vector = array.array("f", [x / norm for x in raw])
    if as_base64:
        if sys.byteorder != "little":
            vector.byteswap()
        return '"' + base64.b64encode(vector.tobytes()).decode("ascii") + '"'
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


def embedding_vector(text: str, dimensions: int = 1536) -> list[float]:
    """The vector the server returns for `text`, for assertions in tests.

    Args:
        text: An embedding input.
        dimensions: Vector length.

    Returns:
        The unit-length vector (float32 values).
    """
    result: list[float] = json.loads(_embedding_json(text, dimensions, False))
    return result


def embeddings_reply(req: ApiRequest) -> Reply:
    dims, b64 = req.dimensions, req.base64
    # Assembled from cached per-text fragments: re-encoding vectors would dominate the hot path.
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":{_embedding_json(key, dims, b64)}}}'
        for i, key in enumerate(req.keys)
    )
    tokens = req.prompt_tokens
    usage = f'{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}'
    body = f'{{"object":"list","data":[{items}],"model":{json.dumps(req.model)},"usage":{usage}}}'
    return Reply(200, JSON_HEADERS, body.encode(), prompt_tokens=req.prompt_tokens)
