"""Real SDK objects for tests, built on real objects of the HTTP package openai runs on.

The newest openai reads more of the request and response an error keeps (it redacts sensitive
request headers, for one), so tests never build SDK objects around stand-ins: every error here
wraps a real ``Request`` / ``Response`` of httpx (openai 2.x) or httpx2 (openai 3.x).
"""

from __future__ import annotations

from typing import Any

import openai

from resilient_llm._http import httpx

__all__ = ["connection_error", "status_error", "timeout_error"]

_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def request(path: str = "/v1/embeddings", headers: dict[str, str] | None = None) -> Any:
    """A real request of the HTTP package in use."""
    return httpx.Request("POST", f"http://test{path}", headers=headers or {})


def status_error(
    status: int,
    *,
    body: object = None,
    headers: dict[str, str] | None = None,
    cls: type[openai.APIStatusError] | None = None,
    path: str = "/v1/embeddings",
) -> openai.APIStatusError:
    """The error the SDK raises for an HTTP ``status`` answer carrying ``body``.

    ``body`` is the whole JSON document (``{"error": {...}}``), as a server sends it; the error
    keeps its inner ``error`` object as ``.body``, as the SDK does.
    """
    response = httpx.Response(
        status,
        headers=headers or {},
        request=request(path, {"Authorization": "Bearer sk-test-0123456789"}),
        json=body if body is not None else {},
    )
    inner = body.get("error", body) if isinstance(body, dict) else body
    error_type = (
        cls
        or _STATUS_ERRORS.get(status)
        or (openai.InternalServerError if status >= 500 else openai.APIStatusError)
    )
    return error_type(f"Error code: {status} - {body}", response=response, body=inner)


def timeout_error(path: str = "/v1/embeddings") -> openai.APITimeoutError:
    return openai.APITimeoutError(request=request(path))


def connection_error(path: str = "/v1/embeddings") -> openai.APIConnectionError:
    return openai.APIConnectionError(request=request(path))
