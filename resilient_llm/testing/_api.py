"""The OpenAI-compatible endpoints as pure functions from a request to a reply (no I/O).

Shapes follow OpenAI's OpenAPI description (`CreateEmbeddingResponse`,
`CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`, `ListModelsResponse`,
`ErrorResponse`); limits and messages follow what the real API answers.
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from ._faults import error_body

MAX_EMBEDDING_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
SUMMARY_WORDS = 12

KNOWN_MODELS: tuple[tuple[str, int, str], ...] = (
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4.1-mini", 1744318173, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
    ("text-embedding-ada-002", 1671217299, "openai-internal"),
)

# Header blocks are kept encoded ("name: value\r\n" lines): the hot path only concatenates.
JSON_HEADERS = b"content-type: application/json\r\n"
SSE_HEADERS = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"


@dataclass(slots=True)
class Reply:
    """What to answer: status, a header block (without framing) and a body or streamed chunks."""

    status: int
    headers: bytes = JSON_HEADERS
    body: bytes = b""
    chunks: list[bytes] | None = None
    prompt_tokens: int = 0


@dataclass(slots=True)
class ApiRequest:
    """A request, parsed leniently: enough to log it, check it for poison and rate-limit it."""

    method: str
    path: str
    endpoint: str
    payload: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    texts: list[str] = field(default_factory=list)
    n_inputs: int = 0
    prompt_tokens: int = 0
    error: Reply | None = None
    # Embeddings: one cache key per input (the text, or a tag plus the token ids).
    keys: list[str] = field(default_factory=list)
    dimensions: int = 0
    base64: bool = False


def error_reply(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: bytes = b"",
) -> Reply:
    """Build an OpenAI-style error reply."""
    return Reply(status, JSON_HEADERS + headers, error_body(message, error_type, code, param))


def estimate_tokens(text: str) -> int:
    """Roughly what a BPE tokenizer makes of English text: four characters a token."""
    return max(1, len(text) // 4)


def is_unknown_model(model: str) -> bool:
    """Models the server pretends not to have, to exercise 404 ``model_not_found``."""
    return model == "does-not-exist" or model.startswith("unknown-")


def _model_not_found(model: str) -> Reply:
    return error_reply(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "not_found_error",
        "model_not_found",
    )


def _invalid(message: str, param: str | None = None) -> Reply:
    return error_reply(400, message, "invalid_request_error", None, param)


def parse_request(method: str, target: str, body: bytes) -> ApiRequest:
    """Route and validate one request.

    Args:
        method: HTTP method.
        target: Request target, possibly with a query string.
        body: Request body.

    Returns:
        The parsed request; `ApiRequest.error` is set when it must be refused.
    """
    path = target.split("?", 1)[0]
    if path == "/v1/embeddings":
        req = ApiRequest(method, path, "embeddings")
        if method == "POST":
            _parse_embeddings(req, body)
            return req
    elif path == "/v1/chat/completions":
        req = ApiRequest(method, path, "chat")
        if method == "POST":
            _parse_chat(req, body)
            return req
    elif path == "/v1/models" or path.startswith("/v1/models/"):
        req = ApiRequest(method, path, "models")
        if method in ("GET", "HEAD"):
            if path != "/v1/models":
                req.model = unquote(path[len("/v1/models/") :])
                if is_unknown_model(req.model) or not req.model:
                    req.error = _model_not_found(req.model)
            return req
    else:
        req = ApiRequest(method, path, "unknown")
        req.error = error_reply(404, f"Invalid URL ({method} {path})")
        return req
    req.error = error_reply(405, f"Invalid method for URL ({method} {path})")
    return req


def _load_object(req: ApiRequest, body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        req.error = _invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
        return None
    req.payload = payload
    model = payload.get("model")
    if isinstance(model, str) and model:
        req.model = model
    else:
        req.error = _invalid("you must provide a model parameter", "model")
        return None
    return payload


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _parse_embeddings(req: ApiRequest, body: bytes) -> None:
    payload = _load_object(req, body)
    if payload is None:
        return
    if "input" not in payload:
        req.error = _invalid("'input' is a required property", "input")
        return
    raw = payload["input"]
    items: list[str | list[int]]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and _is_token_list(raw)):
        items = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) or _is_token_list(x) for x in raw):
        items = raw
    else:
        req.error = _invalid("'$.input' is invalid. Please check the API reference.", "input")
        return
    req.n_inputs = len(items)
    if not items or any(len(x) == 0 for x in items):
        req.error = _invalid("'$.input' is invalid. Please check the API reference.", "input")
        return
    if len(items) > MAX_EMBEDDING_INPUTS:
        req.error = _invalid(
            f"'$.input' is too long: {len(items)} items, at most {MAX_EMBEDDING_INPUTS}.", "input"
        )
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
        if tokens > MAX_INPUT_TOKENS:
            req.error = _invalid(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
                f"requested {tokens} tokens ({tokens} in your prompt; 0 for the completion). "
                "Please reduce your prompt; or completion length."
            )
            return
        total += tokens
    if total > MAX_REQUEST_TOKENS:
        req.error = _invalid(
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request", "input"
        )
        return
    req.prompt_tokens = total

    assert req.model is not None
    native = 3072 if req.model.endswith("-large") else 1536
    dimensions = payload.get("dimensions")
    if dimensions is None:
        req.dimensions = native
    elif req.model == "text-embedding-ada-002":
        req.error = _invalid("This model does not support specifying dimensions.", "dimensions")
        return
    elif (
        isinstance(dimensions, int)
        and not isinstance(dimensions, bool)
        and 1 <= dimensions <= native
    ):
        req.dimensions = dimensions
    else:
        req.error = _invalid(
            f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {native}.",
            "dimensions",
        )
        return
    encoding = payload.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        req.error = _invalid(
            f"Invalid value for 'encoding_format': {encoding!r}. Supported: 'float', 'base64'.",
            "encoding_format",
        )
        return
    req.base64 = encoding == "base64"
    if is_unknown_model(req.model):
        req.error = _model_not_found(req.model)


def _message_text(content: object) -> str | None:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                return None
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    return None
                parts.append(text)
        return "\n".join(parts)
    return None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _parse_chat(req: ApiRequest, body: bytes) -> None:
    payload = _load_object(req, body)
    if payload is None:
        return
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        req.error = _invalid("'messages' must be a non-empty array of messages.", "messages")
        return
    for i, message in enumerate(messages):
        text = _message_text(message.get("content")) if isinstance(message, dict) else None
        if text is None or not isinstance(message.get("role"), str):
            req.error = _invalid(f"Invalid value for 'messages[{i}]'.", f"messages[{i}]")
            return
        req.texts.append(text)
    req.n_inputs = len(messages)
    # Chat formatting costs a few tokens per message, as OpenAI bills it.
    req.prompt_tokens = sum(len(t) // 4 for t in req.texts) + 3 * len(messages) + 3
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = payload.get(name)
        if value is not None and not _positive_int(value):
            req.error = _invalid(f"Invalid '{name}': must be a positive integer.", name)
            return
    if not isinstance(payload.get("stream", False), bool):
        req.error = _invalid("Invalid 'stream': expected a boolean.", "stream")
        return
    if payload.get("stream_options") is not None and not payload.get("stream"):
        req.error = _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
        return
    assert req.model is not None
    if is_unknown_model(req.model):
        req.error = _model_not_found(req.model)


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


def chat_reply_text(text: str) -> str:
    """The completion the server writes for a last user message `text`.

    Args:
        text: The last user message.

    Returns:
        ``"Summary: "`` and the first twelve words of `text`, ``...`` if there were more.
    """
    words = text.split()
    if not words:
        return "Summary: (empty)"
    more = "..." if len(words) > SUMMARY_WORDS else ""
    return "Summary: " + " ".join(words[:SUMMARY_WORDS]) + more


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat(req: ApiRequest, number: int) -> Reply:
    payload = req.payload
    messages = payload["messages"]
    last = next(
        (req.texts[i] for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"),
        req.texts[-1],
    )
    words = chat_reply_text(last).split(" ")
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    finish = "stop"
    if limit is not None and len(words) > limit:
        words = words[:limit]
        finish = "length"
    n = payload.get("n") or 1
    completion = len(words) * n
    base = {
        "id": f"chatcmpl-mock{number:012d}",
        "created": int(time.time()),
        "model": req.model,
        "service_tier": "default",
        "system_fingerprint": "fp_resilient_llm",
    }
    if not payload.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": " ".join(words),
            "refusal": None,
            "annotations": [],
        }
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]
        document = {"object": "chat.completion", **base, "choices": choices}
        document["usage"] = _usage(req.prompt_tokens, completion)
        return Reply(
            200, JSON_HEADERS, json.dumps(document).encode(), prompt_tokens=req.prompt_tokens
        )

    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    head = {"object": "chat.completion.chunk", **base}

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {**head, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def choice(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    chunks = [
        event([choice(i, {"role": "assistant", "content": "", "refusal": None}) for i in range(n)])
    ]
    for position, word in enumerate(words):
        piece = word if position == 0 else " " + word
        chunks.append(event([choice(i, {"content": piece}) for i in range(n)]))
    chunks.append(event([choice(i, {}, finish) for i in range(n)]))
    if include_usage:
        chunks.append(event([], _usage(req.prompt_tokens, completion)))
    chunks.append(b"data: [DONE]\n\n")
    return Reply(200, SSE_HEADERS, chunks=chunks, prompt_tokens=req.prompt_tokens)


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


def respond(req: ApiRequest, number: int) -> Reply:
    """Answer a request that passed every check.

    Args:
        req: The parsed request (its `error` must be None).
        number: A per-server request number, used for response ids.

    Returns:
        The reply.
    """
    if req.error is not None:
        return req.error
    if req.endpoint == "embeddings":
        return _embeddings(req)
    if req.endpoint == "chat":
        return _chat(req, number)
    return _models(req)
