"""Issue 12, row 10 (SPEC §6 logs): logs stay readable at any scale: one WARNING per retry or
failed request (never one per item of a request that failed whole), one summary line per batch.

A bad key and a generator of 200,000 texts: today 211,594 lines on stderr, one WARNING per item.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient_llm import ItemFailure
from resilient_llm.testing import MockOpenAIServer

from ._public import async_client, captured_logs, run_cli, sync_client

TOTAL = 200_000
# The async forms share one code path on both backends: the default run gives them a quarter
# of the texts; the full run (``slow``) the whole 200,000.
SIZES = [
    pytest.param(TOTAL // 4, id="50k"),
    pytest.param(TOTAL, id="200k", marks=pytest.mark.slow),
]
SOON = 30.0  # seconds; the batch stops after its first few requests


def texts(total: int = TOTAL) -> Iterator[str]:
    for i in range(total):
        yield f"generated text {i}"


def check(seen: bytearray, failure_types: set[str], records: list[logging.LogRecord],
          requests: int, elapsed: float) -> None:  # fmt: skip
    assert all(seen), f"{seen.count(0)} items were never reported"
    assert failure_types == {"AuthenticationError"}, failure_types
    # One per failed request (no retry: a 401 is final), one summary line per batch, and at
    # most one saying why the batch stopped.
    bound = requests + 2
    assert len(records) <= bound, (
        f"{len(records)} WARNING+ records for {requests} requests; first: "
        + " | ".join(r.getMessage()[:120] for r in records[:3])
    )
    assert requests <= 20, f"{requests} requests with a rejected key"
    assert elapsed < SOON, f"{elapsed:.1f} s"


def test_bad_key_and_200k_texts_sync() -> None:
    seen = bytearray(TOTAL)
    types: set[str] = set()
    with MockOpenAIServer(api_key="the-right-key-0123") as server:
        with captured_logs(level=logging.WARNING) as logs, sync_client(server.base_url) as client:
            started = time.monotonic()
            with client.iter_embed_batch(texts(), batch_size=100) as stream:
                for index, outcome in stream:
                    assert isinstance(outcome, ItemFailure)
                    assert not seen[index], f"item {index} reported twice"
                    seen[index] = 1
                    types.add(outcome.error_type)
            elapsed = time.monotonic() - started
        requests = server.stats.total_requests
    check(seen, types, logs.at_least(logging.WARNING), requests, elapsed)


@pytest.mark.anyio
@pytest.mark.parametrize("total", SIZES)
async def test_bad_key_and_many_texts_async(total: int, anyio_backend: str) -> None:
    seen = bytearray(total)
    types: set[str] = set()
    with MockOpenAIServer(api_key="the-right-key-0123") as server:
        with captured_logs(level=logging.WARNING) as logs:
            async with async_client(server.base_url) as client:
                started = time.monotonic()
                async with client.iter_embed_batch(texts(total), batch_size=100) as stream:
                    async for index, outcome in stream:
                        assert isinstance(outcome, ItemFailure)
                        assert not seen[index], f"item {index} reported twice"
                        seen[index] = 1
                        types.add(outcome.error_type)
                elapsed = time.monotonic() - started
        requests = server.stats.total_requests
    check(seen, types, logs.at_least(logging.WARNING), requests, elapsed)


def test_cli_stderr_stays_short_with_a_bad_key(tmp_path: Path) -> None:
    """20,000 lines, a rejected key, ``-v``: stderr holds a few lines, not one per line."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(20_000)))
    with MockOpenAIServer(api_key="the-right-key-0123") as server:
        done = run_cli(
            "embed", str(source), "-o", str(tmp_path / "out.jsonl"), "--base-url",
            server.base_url, "--batch-size", "100", "-v", "--no-progress", timeout=120,
        )  # fmt: skip
        requests = server.stats.total_requests
    lines = done.stderr.splitlines()
    assert done.returncode == 1, (done.returncode, done.stderr[-1000:])
    assert len(lines) <= requests + 30, f"{len(lines)} stderr lines for {requests} requests"
