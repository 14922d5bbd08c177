"""Issue 19: what a person sees when the disk, the input, the key or the deadline is wrong.

Every test runs the real command line in a subprocess against the loopback server and checks
the exit status, the words on stderr, the files, and what the server received.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import openai
import pytest

from resilient_llm import ResilientClient
from resilient_llm.cli.io import failures_path_for
from resilient_llm.testing import Fault, MockOpenAIServer

from ._helpers import docs, read_jsonl, run_cli, summary_count, write_jsonl
from .conftest import SmallDisk


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- files that cannot be written -------------------------------------------------------------


def test_out_in_a_read_only_folder_is_one_line_exit_2_nothing_sent(
    server: MockOpenAIServer, tmp_path: Path, read_only_dir: Path
) -> None:
    source = write_jsonl(tmp_path / "small.jsonl", docs(5))
    out = read_only_dir / "out.jsonl"

    done = run_cli("embed", str(source), "-o", str(out), "--base-url", server.base_url)

    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("resilient-llm embed: cannot write OUT: ")
    assert str(out) in line
    assert re.search("Read-only file system|Permission denied", line), line
    assert server.stats.total_requests == 0


def test_an_unwritable_failures_path_is_refused_before_anything_is_sent(
    server: MockOpenAIServer, tmp_path: Path, read_only_dir: Path
) -> None:
    source = write_jsonl(tmp_path / "small.jsonl", docs(5, poison=[2]))
    failures = read_only_dir / "f.jsonl"

    done = run_cli(
        "embed", str(source), "-o", str(tmp_path / "out.jsonl"), "--failures", str(failures),
        "--base-url", server.base_url,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith("resilient-llm embed: cannot write the failures file: ")
    assert str(failures) in line
    assert server.stats.total_requests == 0
    assert read_jsonl(tmp_path / "out.jsonl") == []


def test_a_full_disk_stops_with_one_line_a_summary_and_whole_lines_then_resumes(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    records = list(docs(2000))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = small_disk.path / "out.jsonl"
    args = ["embed", str(source), "--dimensions", "8", "--batch-size", "50", "--concurrency", "2"]

    with MockOpenAIServer() as server:
        done = run_cli(
            *args, "-o", str(out), "--base-url", server.base_url, preexec_fn=small_disk.preexec_fn
        )

        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        stopped = [line for line in done.stderr.splitlines() if line.startswith("stopped")]
        assert stopped == [f"stopped: cannot write OUT: {small_disk.reason}: {out}"]
        assert "fix the cause and run the same command again to resume" in done.stderr
        written = read_jsonl(out)  # every line whole: each one parses
        assert 0 < len(written) < len(records)
        assert summary_count(done.stderr, "succeeded") == len(written)
        assert len({row["id"] for row in written}) == len(written)

        # The data is safe: with room to write, the same command does the rest.
        roomy = tmp_path / "out.jsonl"
        shutil.copy(out, roomy)
        again = run_cli(*args, "-o", str(roomy), "--base-url", server.base_url)

    assert again.returncode == 0, again.stderr
    assert summary_count(again.stderr, "skipped (resumed)") == len(written)
    assert Counter(row["id"] for row in read_jsonl(roomy)) == Counter(r["id"] for r in records)


# --- what a failure says ----------------------------------------------------------------------


def test_a_non_string_text_is_named_by_its_id_and_line(tmp_path: Path) -> None:
    records: list[object] = list(docs(40))
    records[26] = {"id": "d26", "text": 26}
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer(record_texts=True) as server:
        done = run_cli("embed", str(source), "-o", str(out), "--base-url", server.base_url)
        sent = [text for request in server.requests for text in request.texts or ()]

    assert done.returncode == 3, done.stderr
    assert read_jsonl(failures_path_for(out)) == [
        {
            "id": "d26",
            "line": 27,
            "error_type": "InvalidInput",
            "message": "expected str, got int",
            "status": None,
            "attempts": 0,
        }
    ]
    assert 'line 27 (id "d26"): InvalidInput: expected str, got int; not sent' in done.stderr
    assert "item 26" not in done.stderr
    assert len(sent) == 39


def test_a_rejected_key_counts_add_up_and_the_rest_is_named_not_sent(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(50))
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer(api_key="sk-the-right-one-0123456789") as guarded:
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", guarded.base_url,
            "--batch-size", "5", "--concurrency", "1",
        )  # fmt: skip
        requests = guarded.stats.total_requests

    assert done.returncode == 1, done.stderr
    assert requests == 1
    failed = read_jsonl(failures_path_for(out))
    assert sorted(str(f["id"]) for f in failed) == sorted(f"d{i}" for i in range(50))
    sent = [f for f in failed if "not_sent" not in f]
    unsent = [f for f in failed if f.get("not_sent") is True]
    assert [(f["error_type"], f["attempts"]) for f in sent] == [("AuthenticationError", 1)] * 5
    assert {(f["error_type"], f["attempts"]) for f in unsent} == {("AuthenticationError", 0)}
    assert len(sent) + len(unsent) == 50
    counts = {row: summary_count(done.stderr, row) for row in ("lines read", "succeeded")}
    assert counts == {"lines read": 50, "succeeded": 0}
    assert summary_count(done.stderr, "failed") == 50
    assert summary_count(done.stderr, "not sent") == 45
    assert "stopped by AuthenticationError (HTTP 401): Incorrect API key provided" in done.stderr


def test_retry_after_beyond_the_deadline_says_so_in_the_message(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(10))
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer() as server:
        server.script(*[Fault.status(429, retry_after=30)] * 3, path="/v1/embeddings")
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", server.base_url, "--deadline", "5"
        )
        requests = server.stats.total_requests

    assert done.returncode == 3, done.stderr
    assert requests == 1  # it did not wait 30 s to try again
    said = re.compile(
        r"deadline of 5 s exceeded after 1 attempt in [\d.]+ s: HTTP 429; the server asked to "
        r"wait 30 s and only [\d.]+ s of the deadline were left"
    )
    assert said.search(done.stderr), done.stderr
    messages = {str(f["message"]) for f in read_jsonl(failures_path_for(out))}
    assert len(messages) == 1
    assert said.search(messages.pop())


def test_durations_are_rounded_for_people(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(3))
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer() as server:
        server.script(*[Fault.hang()] * 5, path="/v1/embeddings")
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", server.base_url,
            "--deadline", "1.5",
        )  # fmt: skip

    assert done.returncode == 3, done.stderr
    assert "DeadlineExceeded: embeddings: deadline of 1.5 s exceeded" in done.stderr
    assert re.search(r"\d\.\d{4,}", done.stderr) is None, done.stderr
    assert re.search(r"^  elapsed\s+\d+(\.\d{1,2})? s$", done.stderr, re.MULTILINE), done.stderr


# --- a server of your own needs no key --------------------------------------------------------


def test_a_server_of_your_own_needs_no_key_in_the_library_and_the_cli_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = write_jsonl(tmp_path / "in.txt", ["one", "two"])
    out = tmp_path / "out.jsonl"

    # The server takes only the placeholder both send, so passing proves what was sent.
    with MockOpenAIServer(api_key="EMPTY") as local:
        with ResilientClient(base_url=local.base_url) as client:
            assert len(client.embed("hello")) > 0
        done = run_cli("embed", str(source), "-o", str(out), "--base-url", local.base_url, key=None)
        assert done.returncode == 0, done.stderr
        assert local.stats.responses_by_status == {200: 2}
    assert [row["id"] for row in read_jsonl(out)] == [1, 2]


def test_openai_itself_needs_a_key_in_the_library_and_the_cli_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    source = write_jsonl(tmp_path / "in.txt", ["one"])
    for base_url in (None, "https://api.openai.com/v1"):
        with pytest.raises(openai.OpenAIError, match="api_key"):
            ResilientClient(base_url=base_url)
        url = ["--base-url", base_url] if base_url else []
        done = run_cli("embed", str(source), "-o", str(tmp_path / "o.jsonl"), *url, key=None)
        assert done.returncode == 2, done.stderr
        assert _one_line(done.stderr).startswith("resilient-llm embed: OPENAI_API_KEY is not set")
    assert not (tmp_path / "o.jsonl").exists()
