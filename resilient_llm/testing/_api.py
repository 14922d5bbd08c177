"""The OpenAI-compatible endpoints as pure functions from a request to a reply (no I/O).

Shapes follow OpenAI's OpenAPI description (`CreateEmbeddingResponse`,
`CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`, `Response` and the
`ResponseStreamEvent`s, `ListModelsResponse`, `ErrorResponse`); limits and messages follow what
the real API answers.
"""

from __future__ import annotations

import array
import base64
import contextlib
import hashlib
import itertools
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from ._defects import REFUSAL_TEXT, TOOL_NAME, alter_embeddings, tool_arguments
from ._faults import EMBEDDING_DEFECTS
from ._limits import SizeLimits, context_refusal
from ._reply import JSON_HEADERS, SSE_HEADERS, Reply, error_reply

__all__ = [
    "JSON_HEADERS",
    "SSE_HEADERS",
    "ApiRequest",
    "Reply",
    "chat_reply_text",
    "embedding_vector",
    "error_reply",
    "parse_request",
    "respond",
]

MAX_EMBEDDING_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
SUMMARY_WORDS = 12
_EMBEDDING_ONLY = frozenset(EMBEDDING_DEFECTS)

KNOWN_MODELS: tuple[tuple[str, int, str], ...] = (
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4.1-mini", 1744318173, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
    ("text-embedding-ada-002", 1671217299, "openai-internal"),
)


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
    # Which size limit refused the request: "inputs", "bytes", "input_tokens", "request_tokens".
    size_limit: str | None = None
    # Responses API: the text the answer is made from.
    prompt_text: str = ""


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
    if path == "/v1/embeddings":
        req = ApiRequest(method, path, "embeddings")
        if method == "POST":
            if not _too_large(req, body, limits):
                _parse_embeddings(req, body, limits)
            return req
    elif path == "/v1/chat/completions":
        req = ApiRequest(method, path, "chat")
        if method == "POST":
            if not _too_large(req, body, limits):
                _parse_chat(req, body)
            return req
    elif path == "/v1/responses":
        req = ApiRequest(method, path, "responses")
        if method == "POST":
            if not _too_large(req, body, limits):
                _parse_responses(req, body)
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


def _too_large(req: ApiRequest, body: bytes, limits: SizeLimits | None) -> bool:
    # A body limit is enforced while reading, before the JSON is even parsed.
    refusal = None if limits is None else limits.check_bytes(len(body))
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


def _parse_embeddings(req: ApiRequest, body: bytes, limits: SizeLimits | None) -> None:
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
    refusal = None if limits is None else limits.check_inputs(len(items))
    if refusal is None and len(items) > MAX_EMBEDDING_INPUTS:
        # What OpenAI answers for more than 2048 inputs: it does not say why.
        refusal = _invalid(
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
        refusal = None if limits is None else limits.check_input_tokens(tokens)
        if refusal is None and tokens > MAX_INPUT_TOKENS:
            refusal = context_refusal(MAX_INPUT_TOKENS, tokens)
        if refusal is not None:
            req.error, req.size_limit = refusal, "input_tokens"
            return
        total += tokens
    if total > MAX_REQUEST_TOKENS:
        req.error = _invalid(
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


def _input_item_text(item: object) -> tuple[str, str] | None:
    """(role, text) of one Responses API input item, or None if it is not one."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        if not isinstance(role, str):
            return None
        if isinstance(content, str):
            return role, content
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict):
                    return None
                if part.get("type") in ("input_text", "output_text", "text"):
                    text = part.get("text")
                    if not isinstance(text, str):
                        return None
                    parts.append(text)
            return role, "\n".join(parts)
        return None
    if kind == "function_call_output" and isinstance(item.get("output"), str):
        return "tool", item["output"]
    # Other item kinds (function calls, reasoning...) carry no text for the answer.
    return ("other", "") if isinstance(kind, str) else None


def _parse_responses(req: ApiRequest, body: bytes) -> None:
    payload = _load_object(req, body)
    if payload is None:
        return
    raw = payload.get("input")
    items: list[tuple[str, str]] = []
    if isinstance(raw, str):
        items.append(("user", raw))
    elif isinstance(raw, list) and raw:
        for i, item in enumerate(raw):
            parsed = _input_item_text(item)
            if parsed is None:
                req.error = _invalid(f"Invalid value for 'input[{i}]'.", f"input[{i}]")
                return
            items.append(parsed)
    else:
        req.error = _invalid("Missing required parameter: 'input'.", "input")
        return
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        req.error = _invalid("Invalid type for 'instructions': expected a string.", "instructions")
        return
    req.texts = [text for _, text in items]
    req.n_inputs = len(items)
    users = [text for role, text in items if role == "user"]
    req.prompt_text = users[-1] if users else req.texts[-1]
    counted = [*req.texts, instructions or ""]
    req.prompt_tokens = sum(len(t) // 4 for t in counted) + 3 * len(items) + 3
    limit = payload.get("max_output_tokens")
    if limit is not None and not _positive_int(limit):
        req.error = _invalid(
            "Invalid 'max_output_tokens': must be a positive integer.", "max_output_tokens"
        )
        return
    if not isinstance(payload.get("stream", False), bool):
        req.error = _invalid("Invalid 'stream': expected a boolean.", "stream")
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


def _chat(req: ApiRequest, number: int, defect: str = "") -> Reply:
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
    # What the message holds: text, a refusal or a function call, per the defect asked for.
    content: str | None = " ".join(words)
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    if defect == "empty":
        content, finish = "", "stop"
    elif defect == "content_filter":
        content, finish = None, "content_filter"
    elif defect == "refusal":
        content, refusal, finish = None, REFUSAL_TEXT, "stop"
    elif defect == "tool_calls":
        content, finish = None, "tool_calls"
        tool_calls = [
            {
                "id": f"call_mock{number:012d}",
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": tool_arguments(last)},
            }
        ]
    completion = len((content or refusal or "").split()) * n
    base = {
        "id": f"chatcmpl-mock{number:012d}",
        "created": int(time.time()),
        "model": req.model,
        "service_tier": "default",
        "system_fingerprint": "fp_resilient_llm",
    }
    choices_key = defect != "missing_choices"
    no_choices = defect in ("no_choices", "missing_choices")
    if not payload.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": refusal,
            "annotations": [],
        }
        if tool_calls is not None:
            message["tool_calls"] = tool_calls
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]
        document: dict[str, Any] = {"object": "chat.completion", **base}
        if choices_key:
            document["choices"] = [] if no_choices else choices
        document["usage"] = _usage(req.prompt_tokens, completion)
        return Reply(
            200, JSON_HEADERS, json.dumps(document).encode(), prompt_tokens=req.prompt_tokens
        )

    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    head = {"object": "chat.completion.chunk", **base}

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {**head}
        if choices_key:
            chunk["choices"] = [] if no_choices else choices
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def choice(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def deltas(delta: dict[str, Any]) -> bytes:
        return event([choice(i, delta) for i in range(n)])

    first = {"role": "assistant", "content": "" if content is not None else None, "refusal": None}
    chunks = [deltas(first)]
    if content:
        for position, word in enumerate(words):
            chunks.append(deltas({"content": word if position == 0 else " " + word}))
    elif refusal is not None:
        for position, word in enumerate(refusal.split(" ")):
            chunks.append(deltas({"refusal": word if position == 0 else " " + word}))
    elif tool_calls is not None:
        call = tool_calls[0]
        opening = {**call, "function": {"name": TOOL_NAME, "arguments": ""}}
        chunks.append(deltas({"tool_calls": [{"index": 0, **opening}]}))
        arguments = call["function"]["arguments"]
        for cut in range(0, len(arguments), 8):
            piece = {"index": 0, "function": {"arguments": arguments[cut : cut + 8]}}
            chunks.append(deltas({"tool_calls": [piece]}))
    chunks.append(event([choice(i, {}, finish) for i in range(n)]))
    if include_usage:
        chunks.append(event([], _usage(req.prompt_tokens, completion)))
    chunks.append(b"data: [DONE]\n\n")
    return Reply(200, SSE_HEADERS, chunks=chunks, prompt_tokens=req.prompt_tokens)


def _responses(req: ApiRequest, number: int) -> Reply:
    """A Responses API answer: one assistant message with one ``output_text`` part."""
    payload = req.payload
    words = chat_reply_text(req.prompt_text).split(" ")
    limit = payload.get("max_output_tokens")
    incomplete = limit is not None and len(words) > limit
    if incomplete:
        words = words[:limit]
    text = " ".join(words)
    created = int(time.time())
    response_id = f"resp_mock{number:012d}"
    item_id = f"msg_mock{number:012d}"
    output_tokens = len(words)
    usage = {
        "input_tokens": req.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": req.prompt_tokens + output_tokens,
    }
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    final_status = "incomplete" if incomplete else "completed"
    item = {
        "id": item_id,
        "type": "message",
        "status": final_status,
        "role": "assistant",
        "content": [part],
    }

    def response(status: str, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "completed_at": created if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete and done else None,
            "instructions": payload.get("instructions"),
            "max_output_tokens": limit,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": payload.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": payload.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage if done else None,
            "metadata": payload.get("metadata") or {},
        }

    if not payload.get("stream"):
        document = response(final_status, [item], done=True)
        return Reply(
            200, JSON_HEADERS, json.dumps(document).encode(), prompt_tokens=req.prompt_tokens
        )

    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = {**item, "status": "in_progress", "content": []}
    empty_part = {**part, "text": ""}
    chunks = [
        event("response.created", response=response("in_progress", [], done=False)),
        event("response.in_progress", response=response("in_progress", [], done=False)),
        event("response.output_item.added", output_index=0, item=started),
        event("response.content_part.added", **where, part=empty_part),
    ]
    for position, word in enumerate(words):
        delta = word if position == 0 else " " + word
        chunks.append(event("response.output_text.delta", **where, delta=delta, logprobs=[]))
    chunks += [
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.content_part.done", **where, part=part),
        event("response.output_item.done", output_index=0, item=item),
        event(f"response.{final_status}", response=response(final_status, [item], done=True)),
    ]
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
        return _chat(req, number, defect)
    if req.endpoint == "responses":
        return _responses(req, number)
    return _models(req)
