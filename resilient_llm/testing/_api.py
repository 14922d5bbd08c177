"""The OpenAI-compatible endpoints as pure functions from a request to a reply (no I/O).

`parse_request` routes a request to its endpoint's parser and `respond` to its answer. Chat
completions and the Responses API have a module each (`_chat`, `_responses`), the embeddings body
checks are in `_embeddings`; the embeddings answer (assembled from cached vectors: the hot path)
and the models list are here. Shapes follow OpenAI's OpenAPI description
(`CreateEmbeddingResponse`, `CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`,
`Response` and the `ResponseStreamEvent`s, `ListModelsResponse`, `ErrorResponse`); limits and
messages follow what the real API answers.
"""

from __future__ import annotations

import array
import base64
import contextlib
import hashlib
import json
import math
import random
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from ._chat import chat_reply, parse_chat
from ._defects import EMBEDDING_DEFECTS, alter_embeddings
from ._embeddings import parse_embeddings
from ._limits import SizeLimits
from ._reply import JSON_HEADERS, Reply, error_reply
from ._request import ApiRequest, is_unknown_model, model_not_found
from ._responses import parse_responses, responses_reply

__all__ = ["KNOWN_MODELS", "embedding_vector", "parse_request", "respond"]

_EMBEDDING_ONLY = frozenset(EMBEDDING_DEFECTS)

KNOWN_MODELS: tuple[tuple[str, int, str], ...] = (
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4.1-mini", 1744318173, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
    ("text-embedding-ada-002", 1671217299, "openai-internal"),
)

# The POST endpoints: path -> (endpoint, parser of a body within the size limits).
_POSTS: dict[str, tuple[str, Callable[[ApiRequest, bytes, SizeLimits | None], None]]] = {
    "/v1/embeddings": ("embeddings", parse_embeddings),
    "/v1/chat/completions": ("chat", lambda req, body, _limits: parse_chat(req, body)),
    "/v1/responses": ("responses", lambda req, body, _limits: parse_responses(req, body)),
}


def parse_request(
    method: str, target: str, body: bytes, limits: SizeLimits | None = None
) -> ApiRequest:
    """Route and validate one request.

    Args:
        method: HTTP method.
        target: Request target, possibly with a query string.
        body: Request body.
        limits: The server's opt-in size limits, checked before anything else about the body
            (the built-in OpenAI limits always apply).

    Returns:
        The parsed request; `ApiRequest.error` is set when it must be refused.
    """
    path = target.split("?", 1)[0]
    if "://" in path:
        # The absolute form a client sends to an HTTP proxy: this server answers as the proxy
        # and the origin both, so tests can check that HTTP(S)_PROXY is honoured.
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    post = _POSTS.get(path)
    if post is not None:
        endpoint, parse = post
        req = ApiRequest(method, path, endpoint)
        if method == "POST":
            if not _too_large(req, body, limits):
                parse(req, body, limits)
            return req
    elif path == "/v1/models" or path.startswith("/v1/models/"):
        req = ApiRequest(method, path, "models")
        if method in ("GET", "HEAD"):
            if path != "/v1/models":
                req.model = unquote(path[len("/v1/models/") :])
                if is_unknown_model(req.model) or not req.model:
                    req.error = model_not_found(req.model)
            return req
    else:
        req = ApiRequest(method, path, "unknown")
        req.error = error_reply(404, f"Invalid URL ({method} {path})")
        return req
    req.error = error_reply(405, f"Invalid method for URL ({method} {path})")
    return req


def _too_large(req: ApiRequest, body: bytes, limits: SizeLimits | None) -> bool:
    # A body limit is enforced while reading, before the JSON is even parsed.
    refusal = None if limits is None else limits.check("bytes", len(body))
    if refusal is None:
        return False
    req.error, req.size_limit = refusal, "bytes"
    # Still parsed, leniently, so that the request log says what was refused.
    with contextlib.suppress(Exception):
        payload = json.loads(body)
        if isinstance(payload, dict):
            model = payload.get("model")
            req.model = model if isinstance(model, str) else None
            raw = payload.get("input", payload.get("messages"))
            req.n_inputs = len(raw) if isinstance(raw, list) else int(raw is not None)
    return True


# The benchmarks (benchmarks/_serve.py) replace `_api._embedding_json` with an unbounded cache:
# `_embeddings` below must keep looking it up here.
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


def _embeddings(req: ApiRequest) -> Reply:
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


def _model_object(model_id: str) -> dict[str, Any]:
    for known, created, owner in KNOWN_MODELS:
        if known == model_id:
            return {"id": known, "object": "model", "created": created, "owned_by": owner}
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "user"}


def _models(req: ApiRequest) -> Reply:
    if req.model is not None:
        document: dict[str, Any] = _model_object(req.model)
    else:
        document = {"object": "list", "data": [_model_object(m[0]) for m in KNOWN_MODELS]}
    return Reply(200, JSON_HEADERS, json.dumps(document).encode())


def respond(req: ApiRequest, number: int, defect: str = "", at: int = -1) -> Reply:
    """Answer a request that passed every check.

    Args:
        req: The parsed request (its `error` must be None).
        number: A per-server request number, used for response ids.
        defect: An integrity defect to build into the answer (see `Fault.embeddings` and
            `Fault.chat`); empty for a correct answer.
        at: Which embedding entry the defect hits.

    Returns:
        The reply.

    Raises:
        ValueError: If the defect does not apply to this endpoint.
    """
    if req.error is not None:
        return req.error
    if defect:
        wanted = "embeddings" if defect in _EMBEDDING_ONLY else "chat"
        if req.endpoint != wanted:
            target = "/v1/embeddings" if wanted == "embeddings" else "/v1/chat/completions"
            raise ValueError(
                f"the {wanted} defect {defect!r} does not apply to {req.method} {req.path}; "
                f"script it with path={target!r}"
            )
    if req.endpoint == "embeddings":
        reply = _embeddings(req)
        if defect:
            reply.body = alter_embeddings(reply.body, defect, at)
        return reply
    if req.endpoint == "chat":
        return chat_reply(req, number, defect)
    if req.endpoint == "responses":
        return responses_reply(req, number)
    return _models(req)
