"""``POST /v1/embeddings``: its body checked as OpenAI checks it, against its own limits and the
server's opt-in ones (no I/O). The answer is built in `_api`."""

from __future__ import annotations

from ._limits import SizeLimits, context_refusal
from ._request import ApiRequest, check_model, estimate_tokens, invalid, load_object

__all__ = ["parse_embeddings"]

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
