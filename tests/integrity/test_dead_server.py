"""Issue 12, row 5 (SPEC §6 dead server): a batch against a server that is not there ends in
seconds, with `ServerUnreachable` naming the base URL for every item not sent.

Runs use the library's default `RetryPolicy` (5 attempts, 0.5 s base delay): the policy a user
has. Today the CLI sends 200 requests with 800 retries over 95 s, exits 3, and every failure
says only "Connection error.".
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient_llm import ItemFailure, RetryPolicy

from ._public import async_client, closed_port, run_cli, stat, stopped_by, sync_client

TOTAL = 5_000
BATCH_SIZE = 25
SOON = 10.0  # seconds: "ends within ~10 s" (the first attempts back off 0.5 s, 1 s, 2 s ...)
GIVE_UP = 20.0  # the test stops waiting here: today's batch would run for minutes
CONNECT_TYPES = {"ServerUnreachable", "APIConnectionError"}


def _texts() -> list[str]:
    return [f"line {i}" for i in range(TOTAL)]


def check_dead_server_batch(
    failures: list[ItemFailure], result: Any, base_url: str, elapsed: float
) -> None:
    assert elapsed < SOON, f"the batch took {elapsed:.1f} s against a dead server"
    assert sorted(f.index for f in failures) == list(range(TOTAL)), "every item fails, once"
    assert {f.error_type for f in failures} <= CONNECT_TYPES, {f.error_type for f in failures}
    unsent = [f for f in failures if f.attempts == 0]
    assert unsent, "nothing was left unsent: the batch never stopped"
    assert {f.error_type for f in unsent} == {"ServerUnreachable"}
    assert all(base_url in f.message for f in unsent), unsent[0].message
    assert stat(result, "not_sent") == len(unsent)
    stop = stopped_by(result)
    assert stop is not None, "the batch ran to the end"
    assert stop.error_type == "ServerUnreachable", stop
    assert base_url in stop.message, stop.message


def test_embed_batch_against_a_closed_port_sync() -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    failures: list[ItemFailure] = []
    with sync_client(base_url, retry=RetryPolicy()) as client:
        started = time.monotonic()
        with client.iter_embed_batch(_texts(), batch_size=BATCH_SIZE) as stream:
            for _, outcome in stream:
                assert isinstance(outcome, ItemFailure), outcome
                failures.append(outcome)
                if time.monotonic() - started > GIVE_UP:
                    pytest.fail(
                        f"still running after {GIVE_UP:.0f} s with {len(failures)} of {TOTAL} "
                        "items reported"
                    )
            elapsed = time.monotonic() - started
            result = stream.result()
    check_dead_server_batch(failures, result, base_url, elapsed)


@pytest.mark.anyio
async def test_embed_batch_against_a_closed_port_async(anyio_backend: str) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    failures: list[ItemFailure] = []
    async with async_client(base_url, retry=RetryPolicy()) as client:
        started = time.monotonic()
        with anyio.move_on_after(GIVE_UP) as scope:
            async with client.iter_embed_batch(_texts(), batch_size=BATCH_SIZE) as stream:
                async for _, outcome in stream:
                    assert isinstance(outcome, ItemFailure), outcome
                    failures.append(outcome)
                result = stream.result()
        elapsed = time.monotonic() - started
    if scope.cancelled_caught:
        pytest.fail(f"still running after {GIVE_UP:.0f} s with {len(failures)} items reported")
    check_dead_server_batch(failures, result, base_url, elapsed)


def test_cli_embed_against_a_closed_port(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(_texts()))
    )
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    try:
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", base_url,
            "--batch-size", str(BATCH_SIZE), "--no-progress", timeout=GIVE_UP + 10,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the CLI was still running after {GIVE_UP + 10:.0f} s: {exc}")
    elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.returncode, done.stderr[-1500:])
    assert elapsed < SOON + 3, f"{elapsed:.1f} s (the interpreter's start included)"
    lines = done.stderr.splitlines()
    naming = [line for line in lines if base_url in line]
    assert naming, f"no line names {base_url}: {done.stderr[-1500:]}"
    assert len(lines) <= 30, f"{len(lines)} lines on stderr"
    records = [
        json.loads(line) for line in (tmp_path / "out.failures.jsonl").read_text().splitlines()
    ]
    assert len(records) == TOTAL
    assert {r["error_type"] for r in records} <= CONNECT_TYPES
    unsent = [r for r in records if r["attempts"] == 0]
    assert unsent, "nothing was left unsent: the batch never stopped"
    assert {r["error_type"] for r in unsent} == {"ServerUnreachable"}
    assert all(base_url in r["message"] for r in unsent)
