"""What the server answers: a status, a header block and a body or streamed chunks (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "JSON_HEADERS",
    "SSE_HEADERS",
    "Reply",
    "default_error",
    "error_body",
    "error_reply",
    "header_block",
]

# Header blocks are kept encoded ("name: value\r\n" lines): the hot path only concatenates.
JSON_HEADERS = b"content-type: application/json\r\n"
SSE_HEADERS = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"

# Default `type`, `code` and message per status, as OpenAI's API sends them.
_STATUS_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "authentication_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    ),
    403: ("permission_error", None, "You are not allowed to sample from this model."),
    404: (
        "not_found_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    408: ("timeout_error", None, "Request timed out."),
    409: ("conflict_error", None, "The request conflicts with the current state of the resource."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@dataclass(slots=True)
class Reply:
    """What to answer: status, a header block (without framing) and a body or streamed chunks."""

    status: int
    headers: bytes = JSON_HEADERS
    body: bytes = b""
    chunks: list[bytes] | None = None
    prompt_tokens: int = 0


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Encode an error the way OpenAI's API does (`ErrorResponse` in its OpenAPI description)."""
    payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(payload).encode()


def default_error(status: int) -> tuple[str, str | None, str]:
    """The `type`, `code` and message OpenAI's API sends with an error `status`."""
    return _STATUS_DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )


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


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """Encode header lines, refusing what would break the framing of the response."""
    lines = []
    for name, value in headers:
        if not name or any(c in name for c in "\r\n: \t") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")
