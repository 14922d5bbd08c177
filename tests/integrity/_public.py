"""What the integrity tests share: the public names under test, clients, the server's record.

Only public names of ``resilient_llm`` are used.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from resilient_llm import (
    AsyncResilientClient,
    BatchResult,
    InvalidResponse,
    ResilientClient,
    RetryPolicy,
    ServerUnreachable,
)
from resilient_llm.testing import MockOpenAIServer, embedding_vector

__all__ = [
    "DIMS",
    "FAST",
    "KEY",
    "InvalidResponse",
    "LogCapture",
    "ServerUnreachable",
    "answered_texts",
    "assert_outcomes",
    "async_client",
    "captured_logs",
    "closed_port",
    "error_text",
    "run_cli",
    "same_vector",
    "sent_texts",
    "stat",
    "stopped_by",
    "sync_client",
    "vector_of",
]

DIMS = 8
KEY = "sk-integrity-0123456789abcdef"
# Quick back-off: these tests check decisions, not patience.
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


def sync_client(base_url: str, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("deadline", 20)
    kwargs.setdefault("api_key", KEY)
    return ResilientClient(base_url=base_url, **kwargs)


def async_client(base_url: str, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("deadline", 20)
    kwargs.setdefault("api_key", KEY)
    return AsyncResilientClient(base_url=base_url, **kwargs)


# -- what the caller got ------------------------------------------------------------------------


def stat(result: BatchResult[Any], name: str) -> Any:
    """A `BatchStats` field that SPEC §6 adds (``not_sent``, ``size_limit``), or a clear failure."""
    stats = result.stats
    assert hasattr(stats, name), f"BatchStats has no {name!r} (SPEC §6 / ARCH: public records)"
    return getattr(stats, name)


def stopped_by(result: BatchResult[Any]) -> Any:
    assert hasattr(result, "stopped_by"), "BatchResult has no 'stopped_by' (ARCH: public records)"
    return result.stopped_by


def assert_outcomes(
    result: BatchResult[Any],
    inputs: Sequence[Any],
    *,
    failed: Iterable[int] | None = None,
    value_of: Callable[[int], Any] | None = None,
) -> tuple[set[int], set[int]]:
    """Check `result` against the inputs alone, never against its own counters.

    Every index in ``range(len(inputs))`` is a failure record (once) or a value, never both;
    a failed slot holds ``None``; each value equals ``value_of(index)`` when given. With
    ``failed``, exactly those indices failed.

    Returns:
        (indices that succeeded, indices that failed)
    """
    total = len(inputs)
    assert len(result.values) == total, f"{len(result.values)} values for {total} inputs"
    failed_list = [failure.index for failure in result.failures]
    assert len(failed_list) == len(set(failed_list)), "an index failed twice"
    failed_set = set(failed_list)
    assert failed_set <= set(range(total)), f"failures outside the input: {failed_set}"
    ok = set(range(total)) - failed_set
    for index in failed_set:
        assert result.values[index] is None, f"item {index} failed and has a value"
    wrong = []
    for index in sorted(ok):
        value = result.values[index]
        if value is None or (value_of is not None and not _same(value, value_of(index))):
            wrong.append(index)
    assert not wrong, f"{len(wrong)} values are missing or wrong, first indices {wrong[:10]}"
    if failed is not None:
        expected = set(failed)
        assert failed_set == expected, (
            f"failed {sorted(failed_set)[:20]} ({len(failed_set)}), "
            f"expected {sorted(expected)[:20]} ({len(expected)})"
        )
    return ok, failed_set


def same_vector(got: Any, expected: Sequence[float]) -> bool:
    """Equal vectors (float32 values decoded two ways may differ in the last bit)."""
    if not isinstance(got, (list, tuple)) or len(got) != len(expected):
        return False
    return all(
        isinstance(a, float) and abs(a - b) <= 1e-6 for a, b in zip(got, expected, strict=True)
    )


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, list) and expected and isinstance(expected[0], float):
        return same_vector(value, expected)
    return bool(value == expected)


def vector_of(texts: Sequence[str], dims: int = DIMS) -> Callable[[int], list[float]]:
    """The vector the loopback server computes for ``texts[index]``."""
    return lambda index: embedding_vector(texts[index], dims)


def error_text(exc: BaseException) -> str:
    """Everything a printed traceback of `exc` shows: messages, notes, every chained error."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), *map(str, getattr(current, "__notes__", ()))]
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += list(getattr(current, "exceptions", ()))
    return "\n".join(parts)


# -- what the server saw ------------------------------------------------------------------------


def sent_texts(server: MockOpenAIServer, path: str = "/v1/embeddings") -> list[str]:
    """Every input text of every request to `path` (the server must record texts)."""
    records = [r for r in server.requests if r.path == path]
    assert all(r.texts is not None for r in records), "start the server with record_texts=True"
    return [text for record in records for text in record.texts or ()]


def answered_texts(server: MockOpenAIServer, path: str = "/v1/embeddings") -> set[str]:
    """Texts of the requests the server itself answered 200 (no canned answer)."""
    return {
        text
        for record in server.requests
        if record.path == path and record.status == 200 and record.fault is None
        for text in record.texts or ()
    }


# -- logs, ports, the command line --------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record of a logger, formatted as a log file shows it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


@contextmanager
def captured_logs(name: str = "resilient_llm", level: int = logging.DEBUG) -> Iterator[LogCapture]:
    capture = LogCapture()
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(saved)


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(
    *args: str, key: str | None = KEY, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m resilient_llm ARGS`` in a child process, its output captured."""
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    base["PYTHONWARNINGS"] = "ignore"
    if key is not None:
        base["OPENAI_API_KEY"] = key
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "resilient_llm", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
