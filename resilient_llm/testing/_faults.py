"""Faults the loopback server can inject.

No I/O here: a `Fault` only describes what the server should do to one request.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ._defects import CHAT_DEFECTS, EMBEDDING_DEFECTS, ChatDefect, EmbeddingDefect
from ._reply import default_error, error_body, header_block

__all__ = ["DEFAULT_RANDOM_FAULTS", "Fault", "FaultKind", "check_seconds"]

FaultKind = Literal["respond", "latency", "hang", "drip", "reset", "stall", "slow_chunks", "alter"]


def check_seconds(name: str, value: float) -> float:
    """`value` as a float, or a `ValueError` naming `name` if it is negative or not finite."""
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _check_chunks(count: int | None) -> None:
    if count is not None and (isinstance(count, bool) or count < 0):
        raise ValueError(f"after_chunks must be an int >= 0, got {count!r}")


def _format_seconds(value: float) -> str:
    seconds = check_seconds("retry delays", value)
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


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
        default_type, default_code, default_message = default_error(code)
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
        message = (
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        body = error_body(message, "insufficient_quota", "insufficient_quota")
        return cls._canned("insufficient_quota", 429, "application/json", body)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait, then answer normally (on top of the server-wide latency).

        Args:
            seconds: The extra delay.

        Returns:
            The fault, named ``latency``.
        """
        return cls(name="latency", kind="latency", seconds=check_seconds("latency", seconds))

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
        return cls(name="drip", kind="drip", seconds=check_seconds("interval", interval))

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
        seconds = check_seconds("interval", interval)
        return cls(name="slow_chunks", kind="slow_chunks", seconds=seconds)

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
        return cls._altered("embeddings", defect, EMBEDDING_DEFECTS, at)

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
        return cls._altered("chat", defect, CHAT_DEFECTS)

    @classmethod
    def _altered(cls, answer: str, defect: str, known: tuple[str, ...], at: int = -1) -> Fault:
        """The normal `answer` (``embeddings`` or ``chat``) with `defect`, one of `known`."""
        if defect not in known:
            raise ValueError(f"unknown {answer} defect {defect!r}; one of {known}")
        return cls(name=f"{answer}_{defect}", kind="alter", defect=defect, at=at)

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
        body = error_body(message, error_type, error_code)
        return cls._canned("error_in_body", 200, "application/json", body)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 whose ``application/json`` body is cut off mid-document.

        Returns:
            The fault, named ``malformed_json``.
        """
        body = b'{"object": "list", "data": [{"object": "embedding", "embedding": [0.1'
        return cls._canned("malformed_json", 200, "application/json", body)

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
        return cls._canned("html", status, "text/html; charset=utf-8", body)

    @classmethod
    def _canned(cls, name: str, status: int, content_type: str, body: bytes) -> Fault:
        """A canned response of one content type, in place of the normal answer."""
        headers = (("content-type", content_type),)
        return cls(name=name, kind="respond", status_code=status, headers=headers, body=body)


DEFAULT_RANDOM_FAULTS: tuple[Fault, ...] = (
    Fault.status(429, retry_after=0),
    Fault.status(500),
    Fault.status(503),
    Fault.reset(),
)
