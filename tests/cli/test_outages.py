"""Issue 12, command-line rows: a dead server, a rejected key over a large input, an echoed key.

Each runs the real command line in a subprocess; outcomes are checked against the files, the
words on stderr and what the server recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from resilient_llm._http import httpx
from resilient_llm.cli.io import failures_path_for
from resilient_llm.testing import Fault, MockOpenAIServer

from ._helpers import (
    assert_no_key,
    closed_port,
    docs,
    read_jsonl,
    run_cli,
    summary_count,
    write_jsonl,
)

# Not in the sk- form: masked because the client registered it, not because of its shape.
PLAIN_KEY = "azure0123456789abcdef0123456789ab"


def test_a_dead_server_ends_the_job_in_seconds_naming_the_url_once(tmp_path: Path) -> None:
    """Row 5: 5,000 lines at a port where nothing listens (it took 95 s and exited 3)."""
    source = write_jsonl(tmp_path / "in.jsonl", docs(5000))
    out = tmp_path / "out.jsonl"
    base_url = f"http://127.0.0.1:{closed_port()}/v1"

    started = time.monotonic()
    done = run_cli(
        "embed", str(source), "-o", str(out), "--base-url", base_url, "--batch-size", "100",
    )  # fmt: skip
    took = time.monotonic() - started

    assert done.returncode == 1, done.stderr
    # Python's start-up is most of it; 5,000 lines times back-off would be minutes.
    assert took < 30
    naming = [line for line in done.stderr.splitlines() if base_url in line]
    assert len(naming) == 1, done.stderr
    assert naming[0].startswith(
        f"stopped by ServerUnreachable: cannot reach the server at {base_url}"
    )
    failed = read_jsonl(failures_path_for(out))
    assert len(failed) == 5000
    assert {f["error_type"] for f in failed} == {"ServerUnreachable"}
    unsent = [f for f in failed if f.get("not_sent") is True]
    tried = [f for f in failed if "not_sent" not in f]
    assert all(f["attempts"] == 0 for f in unsent)
    assert tried
    assert all(isinstance(f["attempts"], int) and f["attempts"] > 0 for f in tried)
    assert len(unsent) >= 5000 - 8 * 100  # at most the 8 requests in flight were tried
    assert summary_count(done.stderr, "not sent") == len(unsent)
    assert not out.read_bytes()


def _lines_about(stderr: str, word: str) -> list[str]:
    return [line for line in stderr.splitlines() if word in line]


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_a_rejected_key_over_a_large_input_keeps_stderr_short(
    tmp_path: Path, verbosity: str
) -> None:
    """Row 10: one line per failed request or retry and one summary, never one per item."""
    source = write_jsonl(tmp_path / "in.jsonl", docs(20_000))
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer(api_key="sk-the-right-one-0123456789") as guarded:
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", guarded.base_url,
            "--batch-size", "10", "--concurrency", "4", verbosity,
        )  # fmt: skip
        requests = guarded.stats.total_requests

    assert done.returncode == 1, done.stderr
    assert 1 <= requests <= 4
    assert len(read_jsonl(failures_path_for(out))) == 20_000
    failed_requests = _lines_about(done.stderr, "failed after")
    assert 1 <= len(failed_requests) <= requests, done.stderr
    # -vv adds the traceback of the first failure of each kind: one kind here.
    kinds = _lines_about(done.stderr, "the first AuthenticationError")
    assert len(kinds) == (0 if verbosity == "-v" else 1), done.stderr
    assert done.stderr.count("Traceback (most recent call last)") <= 2 * len(kinds)
    # The log lines of the failed requests, the batch's end and summary, the CLI's summary.
    assert len(done.stderr.splitlines()) <= 30 + 80 * len(kinds), done.stderr


def _echoes_the_key(server: MockOpenAIServer) -> bool:
    """Whether an error of ``server`` carries the key back (so the test below can fail)."""
    answer = httpx.post(
        f"{server.base_url}/embeddings",
        json={"model": "text-embedding-3-small", "input": ["x"]},
        headers={"Authorization": f"Bearer {PLAIN_KEY}"},
    )
    return answer.status_code >= 400 and PLAIN_KEY in answer.text


@pytest.mark.parametrize("accepted", [False, True], ids=["key-rejected", "faults"])
def test_an_echoed_key_never_shows_at_vv(tmp_path: Path, accepted: bool) -> None:
    """Row 8: a server that echoes the Authorization header in its error bodies."""
    source = write_jsonl(tmp_path / "in.jsonl", docs(30, poison=[7]))
    out = tmp_path / "out.jsonl"
    server_key = PLAIN_KEY if accepted else "sk-someone-else-0123456789"

    with MockOpenAIServer(echo_authorization=True, api_key=server_key) as leaky:
        if accepted:  # errors come from a poisoned input and from faults, retried
            leaky.script(Fault.status(500), path="/v1/embeddings")
        assert _echoes_the_key(leaky)
        if accepted:
            leaky.script(
                Fault.status(500), Fault.status(429, retry_after=0), Fault.status(503),
                path="/v1/embeddings",
            )  # fmt: skip
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", leaky.base_url,
            "--batch-size", "5", "--concurrency", "2", "-vv", key=PLAIN_KEY,
        )  # fmt: skip

    assert done.returncode == (3 if accepted else 1), done.stderr
    assert "warning: " in done.stderr
    assert "Traceback" in done.stderr
    written = "".join(path.read_text() for path in (out, failures_path_for(out)))
    assert_no_key(done.stdout, done.stderr, written, key=PLAIN_KEY)
