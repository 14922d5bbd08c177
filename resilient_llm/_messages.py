"""Words for people: durations, and the one line that describes an error.

The library's own messages (its errors and log lines) and the command line use these, so an error
reads the same wherever it is shown: ``Type (HTTP status): what happened``, API keys masked.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from ._secrets import redact

__all__ = [
    "connection_cause",
    "describe",
    "duration",
    "error_message",
    "one_line",
    "seconds",
    "server_message",
]

# A line a person reads whole; the rest of a long message is in the failures file or traceback.
DEFAULT_LIMIT = 300
_OPENAI_PREFIX = "Error code: "


def seconds(value: float) -> str:
    """A duration rounded for people: ``1.5 s``, ``0.01 s``, ``30 s``, ``1,250 s``."""
    if value >= 1000:
        return f"{value:,.0f} s"
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.3g} s" if value >= 0.001 else f"{value:.1g} s"


def duration(value: float) -> str:
    """How long something took, for a summary: ``0.03 s``, ``1.5 s``, ``12.3 s``, ``12 min 5 s``,
    ``2 h 3 min``."""
    if value < 0.01:
        return "< 0.01 s"
    if value < 1:
        return f"{value:.2f} s"
    if value < 100:
        return f"{value:.3g} s"
    whole = round(value)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def error_message(error: BaseException) -> str:
    """What happened, in the words of whoever raised ``error``; keys masked, not cut.

    - An OS error: its reason and the file it concerns (``No space left on device: out.jsonl``),
      not ``[Errno 28] ...: 'out.jsonl'``.
    - An HTTP error of the ``openai`` package: the server's own message from the error body
      (``Incorrect API key provided``), the same on every ``openai`` major version, without the
      ``Error code: 401 -`` prefix the status already says.
    - Anything else: ``str(error)``.
    """
    if isinstance(error, OSError) and error.strerror:
        names = [name for name in (error.filename, error.filename2) if name is not None]
        where = " → ".join(str(name) for name in names)
        text = f"{error.strerror}: {where}" if where else str(error.strerror)
        return redact(text)
    status = _status(error)
    if status is None:
        return redact(str(error))
    body = getattr(error, "body", None)
    server_says = body.get("message") if isinstance(body, Mapping) else None
    if isinstance(server_says, str) and server_says.strip():
        return redact(server_says)
    return redact(server_message(str(error), status))


# What the HTTP package's connection errors mean when they carry no message (a reset on asyncio
# is a bare ``ReadError``), by class name: the same in httpx, httpx2, httpcore and httpcore2.
_SILENT_CAUSES = {
    "ConnectError": "could not connect",
    "ReadError": "the connection was closed or reset while the answer was read",
    "WriteError": "the connection was closed or reset while the request was sent",
    "RemoteProtocolError": "the server broke the HTTP protocol",
    "LocalProtocolError": "the request broke the HTTP protocol",
}


def connection_cause(error: BaseException) -> str | None:
    """Why a connection failed, from what ``error`` was raised from: the first cause in the chain
    that says something (``ConnectError: [Errno 111] Connection refused``), else what the first
    one the HTTP package raised means (``ReadError: the connection was closed or reset while the
    answer was read``), else the first one's name.

    ``openai.APIConnectionError`` says only "Connection error."; this is what a person needs.
    """
    chain: list[BaseException] = []
    cause = error.__cause__ or error.__context__
    while cause is not None and cause not in chain and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:
        text = " ".join(str(cause).split())
        if text:
            return _collapse(redact(f"{type(cause).__name__}: {text}"), DEFAULT_LIMIT)
    for cause in chain:
        meaning = _SILENT_CAUSES.get(type(cause).__name__)
        if meaning:
            return f"{type(cause).__name__}: {meaning}"
    return type(chain[0]).__name__ if chain else None


def server_message(text: str, status: int) -> str:
    """The server's own words in the text of an ``openai`` HTTP error of that ``status``.

    openai 3.x says ``Error code: 401 - <message>``, openai 2.x ``Error code: 401 - <the repr of
    the JSON body>``; both become ``<message>``. Other text is returned unchanged.
    """
    prefix = f"{_OPENAI_PREFIX}{status}"
    if text == prefix:
        return ""
    text = text.removeprefix(f"{prefix} - ")
    if not (text.startswith("{") and text.endswith("}")):
        return text
    try:
        body = ast.literal_eval(text)  # a repr of JSON data: literals only, never code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    said = inner.get("message") if isinstance(inner, Mapping) else None
    return said if isinstance(said, str) and said.strip() else text


def one_line(
    kind: str, message: str, *, status: int | None = None, limit: int = DEFAULT_LIMIT
) -> str:
    """``kind (HTTP status): message`` on one line: whitespace collapsed, cut at ``limit``
    characters, keys masked.

    For errors that are records rather than exceptions (a failure read back from a batch), so that
    they read the same as :func:`describe` of the exception.
    """
    status_text = f" (HTTP {status})" if status is not None else ""
    if status is not None:
        message = server_message(message, status)
    text = _collapse(redact(message), limit)
    return f"{kind}{status_text}: {text}" if text else f"{kind}{status_text}"


def _collapse(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(error: BaseException, *, limit: int = DEFAULT_LIMIT) -> str:
    """One line: the error's type, its HTTP status when it has one, and its message.

    Whitespace is collapsed and the message is cut at ``limit`` characters. API keys are masked.
    An OS error reads as its reason and file (``No space left on device: out.jsonl``), without
    the type name; an ``openai`` HTTP error carries the server's own message (see
    :func:`error_message`).
    """
    message = error_message(error)
    if isinstance(error, OSError) and error.strerror:
        return _collapse(message, limit)
    return one_line(type(error).__name__, message, status=_status(error), limit=limit)
