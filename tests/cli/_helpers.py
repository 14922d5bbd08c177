"""Running the real command line in a subprocess, its files, and the summary it prints."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..conftest import TEST_KEY

__all__ = [
    "assert_no_key",
    "cli_env",
    "closed_port",
    "docs",
    "read_jsonl",
    "run_cli",
    "summary_count",
    "write_jsonl",
]


def write_jsonl(path: Path, records: Iterable[object]) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(record if isinstance(record, str) else json.dumps(record))
            file.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """Every line of ``path`` parsed (a torn line fails the test), ``[]`` when it is missing."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def docs(n: int, *, poison: Iterable[int] = ()) -> Iterator[dict[str, object]]:
    bad = set(poison)
    for i in range(n):
        text = f"document {i} about {'POISON' if i in bad else 'apples'} and item {i * 7 % 13}"
        yield {"id": f"d{i}", "text": text}


def cli_env(*, key: str | None = TEST_KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONWARNINGS"] = "error"
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return env


def run_cli(
    *args: str,
    key: str | None = TEST_KEY,
    timeout: float = 60,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m resilient_llm ARGS`` with ``key`` as the only key in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "resilient_llm", *args],
        env=cli_env(key=key),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


def assert_no_key(*texts: str, key: str = TEST_KEY) -> None:
    for text in texts:
        assert key not in text


def summary_count(stderr: str, row: str) -> int:
    """The number on a row of the summary (``  failed    1,234  → ...``)."""
    match = re.search(rf"^ +{re.escape(row)} +([\d,]+)\b", stderr, re.MULTILINE)
    assert match is not None, f"no {row!r} row in:\n{stderr}"
    return int(match.group(1).replace(",", ""))


def closed_port() -> int:
    """A loopback port where nothing listens (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
