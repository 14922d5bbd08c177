"""A request as the endpoints see it, and the checks every endpoint shares (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._reply import Reply, error_reply

__all__ = [
    "ApiRequest",
    "estimate_tokens",
    "invalid",
    "is_unknown_model",
    "load_object",
    "check_model",
    "check_options",
    "model_not_found",
    "poison_refusal",
]


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


def model_not_found(model: str) -> Reply:
    return error_reply(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "not_found_error",
        "model_not_found",
    )


def invalid(message: str, param: str | None = None) -> Reply:
    """A 400 ``invalid_request_error`` about `param`."""
    return error_reply(400, message, "invalid_request_error", None, param)


def load_object(req: ApiRequest, body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object naming a model; None, with `req.error` set, if it is not."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        req.error = invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        )
        return None
    req.payload = payload
    model = payload.get("model")
    if isinstance(model, str) and model:
        req.model = model
    else:
        req.error = invalid("you must provide a model parameter", "model")
        return None
    return payload


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def poison_refusal(req: ApiRequest, marker: str | None) -> Reply | None:
    """The 400 for a request whose input or message text holds the poison `marker`, if it does."""
    if marker is None or not any(marker in text for text in req.texts):
        return None
    return error_reply(
        400,
        f"Invalid input: the request contains the poison marker {marker!r}.",
        "invalid_request_error",
        None,
        "messages" if req.endpoint == "chat" else "input",
    )


def check_options(req: ApiRequest, payload: dict[str, Any], counts: tuple[str, ...]) -> bool:
    """Check the generation options of a chat or Responses API body.

    Args:
        req: The request; its `error` is set when an option is wrong.
        payload: Its body.
        counts: The options that must be positive integers when given.

    Returns:
        Whether the `counts` and ``stream`` (a boolean when given) are right.
    """
    for name in counts:
        value = payload.get(name)
        if value is not None and not _positive_int(value):
            req.error = invalid(f"Invalid '{name}': must be a positive integer.", name)
            return False
    if not isinstance(payload.get("stream", False), bool):
        req.error = invalid("Invalid 'stream': expected a boolean.", "stream")
        return False
    return True


def check_model(req: ApiRequest) -> None:
    """The last check of a body: a model the server pretends not to have gets a 404."""
    assert req.model is not None
    if is_unknown_model(req.model):
        req.error = model_not_found(req.model)
