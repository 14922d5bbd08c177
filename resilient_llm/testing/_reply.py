"""What the server answers: a status, a header block and a body or streamed chunks (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from ._faults import error_body

__all__ = ["JSON_HEADERS", "SSE_HEADERS", "Reply", "error_reply"]

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
