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
from typing import Literal, get_args

FaultKind = Literal["respond", "latency", "hang", "drip", "reset", "stall", "slow_chunks", "alter"]
EmbeddingDefect = Literal[
    "missing",
    "index_negative",
    "index_too_large",
    "duplicate_index",
    "empty_vector",
    "short_vector",
    "nan",
    "infinity",
    "reversed",
]
ChatDefect = Literal[
    "empty", "content_filter", "refusal", "tool_calls", "no_choices", "missing_choices"
]
EMBEDDING_DEFECTS: tuple[str, ...] = get_args(EmbeddingDefect)
CHAT_DEFECTS: tuple[str, ...] = get_args(ChatDefect)

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


def _check_chunks(count: int | None) -> None:
    if count is not None and (isinstance(count, bool) or count < 0):
        raise ValueError(f"after_chunks must be an int >= 0, got {count!r}")


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

    A streamed answer (``stream=True``) goes out as chunks, one per server-sent event; the
    chunk-aware faults (`stall`, `slow_chunks`, `reset` with ``after_chunks``) count those. A
    non-streamed answer is one chunk: its body.

    Attributes:
        name: Short label used in `ServerStats.faults_injected` and `RequestRecord.fault`.
        kind: How the server applies it: ``"respond"`` (a canned response replaces the normal
            one), ``"latency"`` (delay, then the normal response), ``"hang"`` (never answer),
            ``"drip"`` (the normal response one byte at a time), ``"reset"`` (abort the
            connection, optionally after part of the normal response), ``"stall"`` (send the
            status, headers and some chunks, then nothing), ``"slow_chunks"`` (the normal
            response with a pause before every chunk) or ``"alter"`` (the normal answer with a
            defect that breaks its integrity).
        status_code: Status of the canned response (``"respond"`` only).
        headers: Extra response headers of the canned response.
        body: Body of the canned response.
        seconds: Delay for ``"latency"``, interval between bytes for ``"drip"``, between chunks
            for ``"slow_chunks"``.
        after_bytes: For ``"reset"``: how many bytes of the normal response go out first.
        after_chunks: For ``"reset"`` and ``"stall"``: how many chunks go out first (None:
            count bytes instead).
        defect: For ``"alter"``: what is wrong with the answer (see `Fault.embeddings` and
            `Fault.chat`).
        at: For ``"alter"``: the position in ``data`` of the embedding entry the defect hits
            (negative counts from the end).
    """

    name: str
    kind: FaultKind
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    seconds: float = 0.0
    after_bytes: int = 0
    after_chunks: int | None = None
    defect: str = ""
    at: int = -1

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
    def reset(cls, after_bytes: int = 0, *, after_chunks: int | None = None) -> Fault:
        """Read the request, then abort the connection with a TCP RST (SO_LINGER 0).

        Args:
            after_bytes: Send this many bytes of the normal response first (0: none).
            after_chunks: Send the status line, the headers and this many chunks of the normal
                response first (a stream broken after k events); overrides `after_bytes`.

        Returns:
            The fault, named ``reset``.

        Raises:
            ValueError: For a negative count.
        """
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, got {after_bytes}")
        _check_chunks(after_chunks)
        return cls(name="reset", kind="reset", after_bytes=after_bytes, after_chunks=after_chunks)

    @classmethod
    def stall(cls, after_chunks: int = 0) -> Fault:
        """Send the status line, the headers and `after_chunks` chunks, then nothing more.

        The connection stays open until the client gives up (the request log then says
        ``client_closed=True``) or the server stops. With ``after_chunks=0`` a stream fails
        before its first chunk; with more, it breaks after delivering some.

        Args:
            after_chunks: Chunks (streamed events) sent before the stall.

        Returns:
            The fault, named ``stall``.

        Raises:
            ValueError: For a negative count.
        """
        _check_chunks(after_chunks)
        return cls(name="stall", kind="stall", after_chunks=after_chunks)

    @classmethod
    def slow_chunks(cls, interval: float) -> Fault:
        """Send the normal response with a pause of `interval` seconds before every chunk.

        The pause is watched: a client that closes the connection during it is noticed and
        recorded (``RequestRecord.client_closed``), as a server sees a consumer stop reading.

        Args:
            interval: Seconds before each chunk (the headers go out at once).

        Returns:
            The fault, named ``slow_chunks``.

        Raises:
            ValueError: For a negative or infinite interval.
        """
        if interval < 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be finite and >= 0, got {interval!r}")
        return cls(name="slow_chunks", kind="slow_chunks", seconds=float(interval))

    @classmethod
    def embeddings(cls, defect: EmbeddingDefect, *, at: int = -1) -> Fault:
        """The normal embeddings answer to the request it hits, with one integrity defect.

        The answer stays a 200 that the official clients parse; only its content is wrong, so
        it works for any number of inputs and either ``encoding_format``:

        - ``"missing"``: the entry at `at` is left out (one vector too few).
        - ``"index_negative"``: an extra copy of the entry at `at`, with ``index: -1``.
        - ``"index_too_large"``: an extra copy of the entry at `at`, with ``index`` equal to
          the number of inputs.
        - ``"duplicate_index"``: the entry at `at` takes the index of another entry, so one
          index appears twice and one is missing (with a single input: an extra copy of it).
        - ``"empty_vector"``: the entry at `at` has ``"embedding": []`` (base64: ``""``).
        - ``"short_vector"``: the entry at `at` is one value shorter than the others and
          than the requested ``dimensions``.
        - ``"nan"`` / ``"infinity"``: one value of the entry at `at` is NaN / +Infinity
          (JSON ``NaN`` / ``Infinity``, as some servers emit; base64: the float32 value).
        - ``"reversed"``: a valid answer whose ``data`` lists the entries in reverse order,
          each with its correct index (clients must order by ``index``).

        Args:
            defect: Which defect.
            at: Position in ``data`` of the entry it hits (negative counts from the end).

        Returns:
            The fault, named ``embeddings_<defect>``.

        Raises:
            ValueError: For an unknown defect.
        """
        if defect not in EMBEDDING_DEFECTS:
            raise ValueError(f"unknown embeddings defect {defect!r}; one of {EMBEDDING_DEFECTS}")
        return cls(name=f"embeddings_{defect}", kind="alter", defect=defect, at=at)

    @classmethod
    def chat(cls, defect: ChatDefect) -> Fault:
        """The normal chat completion (streamed or not) with one defect, still a 200.

        - ``"empty"``: ``content: ""`` with ``finish_reason: "stop"``.
        - ``"content_filter"``: ``content: null`` with ``finish_reason: "content_filter"``.
        - ``"refusal"``: ``content: null`` and a ``refusal`` message.
        - ``"tool_calls"``: ``content: null``, one function call in ``tool_calls`` and
          ``finish_reason: "tool_calls"``.
        - ``"no_choices"``: ``choices: []`` (in a stream: in every chunk).
        - ``"missing_choices"``: no ``choices`` key at all (in a stream: in every chunk).

        Args:
            defect: Which defect; it hits every choice when ``n > 1``.

        Returns:
            The fault, named ``chat_<defect>``.

        Raises:
            ValueError: For an unknown defect.
        """
        if defect not in CHAT_DEFECTS:
            raise ValueError(f"unknown chat defect {defect!r}; one of {CHAT_DEFECTS}")
        return cls(name=f"chat_{defect}", kind="alter", defect=defect)

    @classmethod
    def error_in_body(
        cls,
        message: str = "The server had an error while processing your request. Sorry about that!",
        *,
        error_type: str = "server_error",
        error_code: str | None = None,
    ) -> Fault:
        """A ``200 OK`` whose JSON body is an OpenAI error object instead of the answer.

        Some gateways report upstream failures this way; the official clients parse it into
        the expected type with every field missing.

        Args:
            message: ``error.message``.
            error_type: ``error.type``.
            error_code: ``error.code``.

        Returns:
            The fault, named ``error_in_body``.
        """
        return cls(
            name="error_in_body",
            kind="respond",
            status_code=200,
            headers=(("content-type", "application/json"),),
            body=error_body(message, error_type, error_code),
        )

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
