"""Issue 12, row 8 (SPEC §5 secrets): the API key never shows, whatever its format, even when a
server echoes it back in its error bodies.

Keys here are not in ``sk-`` form (an Azure-style 32-hex key, a vLLM token), so only matching
the key's value can hide them. Searched: the printed traceback of every error raised
(``DeadlineExceeded`` included, through ``__cause__`` / ``__context__`` / notes), failure
records, ``BatchFailed``, every record of the ``resilient_llm`` logger formatted with its
traceback at every level, and the command line's ``-vv`` output and files.

Today the key shows in ``traceback.format_exc()`` of ``DeadlineExceeded`` (through its cause),
in ``ItemFailure.traceback``, in the default WARNING line and in the CLI's ``-vv`` output.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import openai
import pytest

from resilient_llm import BatchFailed, BatchResult, DeadlineExceeded, RetryPolicy

from ._public import async_client, captured_logs, error_text, run_cli, sync_client
from ._servers import EchoAuthServer

AZURE_KEY = "3f1c9a0b7d2e4f6a8b1c0d9e7f6a5b4c"
VLLM_TOKEN = "vllm-local-token-7788"
KEYS = [pytest.param(AZURE_KEY, id="azure-hex"), pytest.param(VLLM_TOKEN, id="vllm-token")]
THREE = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
MANY = RetryPolicy(max_attempts=1_000, base_delay=0.01, max_delay=0.02)


def where(key: str, text: str) -> list[str]:
    return [line for line in text.splitlines() if key in line][:3]


def formatted_exc(call: Any) -> tuple[BaseException, str]:
    """Run `call`; return the error and ``traceback.format_exc()`` taken in its handler."""
    try:
        call()
    except Exception as exc:
        return exc, traceback.format_exc() + error_text(exc)
    raise AssertionError("expected an error")


def check_result(key: str, result: BatchResult[Any]) -> int:
    assert result.failures, "the echoing server was expected to fail items"
    texts = [repr(result), result.summary(100)]
    for failure in result.failures:
        texts += [failure.message, failure.traceback, failure.preview, repr(failure)]
        texts.append(json.dumps(failure.as_dict()))
    try:
        result.raise_for_failures()
    except BatchFailed as exc:
        texts.append(traceback.format_exc() + error_text(exc))
    for text in texts:
        assert key not in text, where(key, text)
    return len(texts)


@pytest.mark.parametrize("key", KEYS)
def test_retries_run_out_sync(key: str) -> None:
    with (
        captured_logs() as logs,
        EchoAuthServer((429, 500, 500)) as server,
        sync_client(server.base_url, api_key=key, retry=THREE) as client,
    ):
        error, text = formatted_exc(lambda: client.embed("x"))
    assert isinstance(error, openai.InternalServerError), repr(error)
    assert key not in text, where(key, text)
    logged = "\n".join(logs.lines)
    assert logs.lines, "the retries were not logged"
    assert key not in logged, where(key, logged)


@pytest.mark.parametrize("key", KEYS)
def test_deadline_exceeded_and_its_cause_sync(key: str) -> None:
    with (
        captured_logs() as logs,
        EchoAuthServer((429,)) as server,
        sync_client(server.base_url, api_key=key, retry=MANY, deadline=0.5) as client,
    ):
        error, text = formatted_exc(lambda: client.embed("x"))
    assert isinstance(error, DeadlineExceeded), repr(error)
    assert error.__cause__ is not None or error.__context__ is not None
    assert key not in text, where(key, text)
    logged = "\n".join(logs.lines)
    assert key not in logged, where(key, logged)


@pytest.mark.parametrize(
    ("statuses", "retry", "deadline", "error_type"),
    [
        pytest.param((429, 500, 500), THREE, 20, "InternalServerError", id="retries-run-out"),
        pytest.param((429,), MANY, 0.5, "DeadlineExceeded", id="deadline"),
    ],
)
def test_batch_failure_records_and_logs_sync(
    statuses: tuple[int, ...], retry: RetryPolicy, deadline: float, error_type: str
) -> None:
    with (
        captured_logs() as logs,
        EchoAuthServer(statuses) as server,
        sync_client(server.base_url, api_key=AZURE_KEY, retry=retry, deadline=deadline) as client,
    ):
        result = client.embed_batch([f"t{i}" for i in range(6)], batch_size=1)
    assert error_type in {f.error_type for f in result.failures}
    check_result(AZURE_KEY, result)
    logged = "\n".join(logs.lines)
    assert any(r.levelname == "WARNING" for r in logs.records)
    assert AZURE_KEY not in logged, where(AZURE_KEY, logged)


@pytest.mark.anyio
async def test_errors_records_and_logs_async(anyio_backend: str) -> None:
    with captured_logs() as logs:
        with EchoAuthServer((429,)) as server:
            async with async_client(
                server.base_url, api_key=AZURE_KEY, retry=MANY, deadline=0.5
            ) as client:
                try:
                    await client.embed("x")
                except DeadlineExceeded as exc:
                    text = traceback.format_exc() + error_text(exc)
                else:
                    raise AssertionError("expected DeadlineExceeded")
        assert AZURE_KEY not in text, where(AZURE_KEY, text)
        with EchoAuthServer((429,)) as server:
            async with async_client(
                server.base_url, api_key=AZURE_KEY, retry=MANY, deadline=0.5
            ) as client:
                result = await client.embed_batch([f"t{i}" for i in range(6)], batch_size=1)
        check_result(AZURE_KEY, result)
    logged = "\n".join(logs.lines)
    assert AZURE_KEY not in logged, where(AZURE_KEY, logged)


def test_cli_vv_output_and_files(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": f"line {i}"}) + "\n" for i in range(6)))
    out = tmp_path / "out.jsonl"
    # Every answer a 429 quoting the key: each line retries until its 1 s deadline runs out.
    with EchoAuthServer((429,)) as server:
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", server.base_url,
            "--batch-size", "1", "--concurrency", "6", "--deadline", "1", "-vv", "--no-progress",
            key=AZURE_KEY, timeout=90,
        )  # fmt: skip
    written = "".join(path.read_text() for path in sorted(tmp_path.glob("out*")))
    output = done.stdout + done.stderr + written
    assert done.returncode != 0, "every line was expected to fail"
    assert "line" in written or "failures" in output.lower(), output[-1000:]
    assert AZURE_KEY not in output, where(AZURE_KEY, output)
