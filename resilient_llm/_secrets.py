"""Keeping API keys out of everything a person or a log file may read.

Every client registers its key here (keys shorter than 8 characters are placeholders such as
``"EMPTY"`` for vLLM, not secrets). Then:

- :func:`redact` masks registered keys, whatever their format (``sk-...``, Azure's 32 hex digits,
  a vLLM token), and anything shaped like an OpenAI key or a bearer token;
- :func:`scrub` masks them in an exception and in every exception chained to it (``__cause__``,
  ``__context__``, notes, exception groups), since a server or a proxy may echo the key back;
- a filter on the ``resilient_llm`` logger masks them in every record it emits, tracebacks
  included.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import traceback
from typing import Any

__all__ = ["MIN_SECRET_LENGTH", "format_exception", "redact", "register", "scrub"]

MIN_SECRET_LENGTH = 8
MASK = "***"

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{8,})|(Bearer\s+)[A-Za-z0-9._\-~+/]{8,}=*")


def register(secret: str | None) -> None:
    """Mask ``secret`` from now on (ignored when shorter than 8 characters)."""
    global _secrets
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if secret not in _secrets:
            # Longest first, so that a key containing another is masked whole.
            _secrets = tuple(sorted({*_secrets, secret}, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered key, and anything shaped like a key, masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "sk-" in text or "Bearer" in text:
        text = _SHAPES.sub(lambda m: f"sk-{MASK}" if m.group(1) else f"{m.group(2)}{MASK}", text)
    return text


def _clean(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {key: _clean(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_clean(item, depth + 1) for item in value)
    return value


def scrub(error: BaseException) -> BaseException:
    """Mask keys in ``error`` and in every exception chained to it, in place; returns ``error``."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # An exception type that refuses new args or attributes keeps them.
        with contextlib.suppress(Exception):
            current.args = _clean(current.args)
        for name in ("message", "body"):
            value = getattr(current, name, None)
            if value is not None and not callable(value):
                with contextlib.suppress(Exception):
                    setattr(current, name, _clean(value))
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [redact(note) if isinstance(note, str) else note for note in notes]
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        pending.extend(getattr(current, "exceptions", ()) or ())
    return error


def format_exception(error: BaseException) -> str:
    """The traceback text of ``error`` (with its chain), keys masked."""
    return redact("".join(traceback.format_exception(type(error), error, error.__traceback__)))


class _RedactingFilter(logging.Filter):
    """Masks keys in the message and traceback of every record of the ``resilient_llm`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets and record.exc_info is None and not isinstance(record.msg, str):
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = format_exception(record.exc_info[1]).rstrip("\n")
            record.exc_text = text
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = _RedactingFilter()
logging.getLogger("resilient_llm").addFilter(_FILTER)
