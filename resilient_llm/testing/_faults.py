"""Faults the loopback server can inject, and OpenAI-style error bodies.

No I/O here: a `Fault` only describes what the server should do to one request.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["respond", "latency", "hang", "drip", "reset"]

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


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Encode an error the way OpenAI's API does (`ErrorResponse` in its OpenAPI description)."""
    payload = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return json.dumps(payload).encode()


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """Encode header lines, refusing what would break the framing of the response."""
    lines = []
    for name, value in headers:
        if not name or any(c in name for c in "\r\n: \t") or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def _format_seconds(value: float) -> str:
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"retry delays must be finite and >= 0, got {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _http_date(when: _dt.datetime) -> str:
    # A naive datetime is taken as UTC: HTTP dates are always GMT.
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return email.utils.format_datetime(when.astimezone(_dt.timezone.utc), usegmt=True)


@dataclass(frozen=True)
class Fault:
    """One injected failure, built with the classmethods (`Fault.status(429)`, `Fault.hang()`, ...).

    Attributes:
        name: Short label used in `ServerStats.faults_injected` and `RequestRecord.fault`.
        kind: How the server applies it: ``"respond"`` (a canned response replaces the normal
            one), ``"latency"`` (delay, then the normal response), ``"hang"`` (never answer),
            ``"drip"`` (the normal response one byte at a time) or ``"reset"`` (abort the
            connection, optionally after part of the normal response).
        status_code: Status of the canned response (``"respond"`` only).
        headers: Extra response headers of the canned response.
        body: Body of the canned response.
        seconds: Delay for ``"latency"``, interval between bytes for ``"drip"``.
        after_bytes: For ``"reset"``: how many bytes of the normal response go out first.
    """

    name: str
    kind: FaultKind
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    seconds: float = 0.0
    after_bytes: int = 0

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        retry_after_date: _dt.datetime | None = None,
        should_retry: bool | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """An OpenAI-style error response.

        Args:
            code: HTTP status, 400 to 599.
            retry_after: ``Retry-After`` in seconds.
            retry_after_ms: ``retry-after-ms`` (OpenAI's millisecond variant).
            retry_after_date: ``Retry-After`` as an HTTP date (a naive datetime is taken as UTC).
            should_retry: Sends ``x-should-retry: true`` / ``false``, which overrides the
                official client's own retry decision.
            error_type: ``error.type``; defaults to what OpenAI sends for that status.
            error_code: ``error.code``; defaults to what OpenAI sends for that status.
            message: ``error.message``.
            headers: Any further response headers.

        Returns:
            The fault, named ``status_<code>``.

        Raises:
            ValueError: For a status outside 400-599 or two ``Retry-After`` values.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"Fault.status needs an error status (400-599), got {code}")
        if retry_after is not None and retry_after_date is not None:
            raise ValueError("pass retry_after or retry_after_date, not both")
        default_type, default_code, default_message = _STATUS_DEFAULTS.get(
            code, ("server_error" if code >= 500 else "invalid_request_error", None, "Error.")
        )
        extra: list[tuple[str, str]] = []
        if retry_after is not None:
            extra.append(("retry-after", _format_seconds(retry_after)))
        if retry_after_date is not None:
            extra.append(("retry-after", _http_date(retry_after_date)))
        if retry_after_ms is not None:
            extra.append(("retry-after-ms", _format_seconds(retry_after_ms)))
        if should_retry is not None:
            extra.append(("x-should-retry", "true" if should_retry else "false"))
        if headers:
            extra.extend((str(k).lower(), str(v)) for k, v in headers.items())
        header_block(extra)  # refuse now what would corrupt the response later
        body = error_body(
            message if message is not None else default_message,
            error_type if error_type is not None else default_type,
            error_code if error_code is not None else default_code,
        )
        return cls(
            name=f"status_{code}",
            kind="respond",
            status_code=code,
            headers=(("content-type", "application/json"), *extra),
            body=body,
        )

    @classmethod
    def insufficient_quota(cls) -> Fault:
        """The 429 OpenAI sends when the account is out of credit: retrying cannot help.

        Returns:
            The fault, named ``insufficient_quota``.
        """
        fault = cls.status(
            429,
            error_type="insufficient_quota",
            error_code="insufficient_quota",
            message=(
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            ),
        )
        return cls(
            name="insufficient_quota",
            kind="respond",
            status_code=429,
            headers=fault.headers,
            body=fault.body,
        )

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait, then answer normally (on top of the server-wide latency).

        Args:
            seconds: The extra delay.

        Returns:
            The fault, named ``latency``.
        """
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"latency must be finite and >= 0, got {seconds!r}")
        return cls(name="latency", kind="latency", seconds=float(seconds))

    @classmethod
    def hang(cls) -> Fault:
        """Read the request and never answer, until the client gives up or the server stops.

        Returns:
            The fault, named ``hang``.
        """
        return cls(name="hang", kind="hang")

    @classmethod
    def drip(cls, interval: float = 1.0) -> Fault:
        """Send the normal response (status line, headers, body) one byte per `interval`.

        Each byte resets a client's read timeout, so only a wall-clock deadline stops it.

        Args:
            interval: Seconds between two bytes.

        Returns:
            The fault, named ``drip``.
        """
        if interval < 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be finite and >= 0, got {interval!r}")
        return cls(name="drip", kind="drip", seconds=float(interval))

    @classmethod
    def reset(cls, after_bytes: int = 0) -> Fault:
        """Read the request, then abort the connection with a TCP RST (SO_LINGER 0).

        Args:
            after_bytes: Send this many bytes of the normal response first (0: none).

        Returns:
            The fault, named ``reset``.
        """
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, got {after_bytes}")
        return cls(name="reset", kind="reset", after_bytes=after_bytes)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 whose ``application/json`` body is cut off mid-document.

        Returns:
            The fault, named ``malformed_json``.
        """
        return cls(
            name="malformed_json",
            kind="respond",
            status_code=200,
            headers=(("content-type", "application/json"),),
            body=b'{"object": "list", "data": [{"object": "embedding", "embedding": [0.1',
        )

    @classmethod
    def html(cls, status: int = 200) -> Fault:
        """An HTML page where JSON was expected, as a misconfigured proxy or captive portal sends.

        Args:
            status: HTTP status of the page.

        Returns:
            The fault, named ``html``.
        """
        body = (
            b"<!DOCTYPE html>\n<html><head><title>Gateway</title></head>"
            b"<body><h1>Something went wrong</h1><p>Please try again later.</p></body></html>\n"
        )
        return cls(
            name="html",
            kind="respond",
            status_code=status,
            headers=(("content-type", "text/html; charset=utf-8"),),
            body=body,
        )


DEFAULT_RANDOM_FAULTS: tuple[Fault, ...] = (
    Fault.status(429, retry_after=0),
    Fault.status(500),
    Fault.status(503),
    Fault.reset(),
)
