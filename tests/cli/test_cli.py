"""The ``resilient-llm`` command line over the loopback server (SPEC §8)."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from resilient_llm.cli import main
from resilient_llm.cli.io import (
    failures_path_for,
)
from resilient_llm.testing import Fault, MockOpenAIServer, embedding_vector

from ..conftest import TEST_KEY
from ._helpers import assert_no_key, cli_env, docs, read_jsonl, run_cli, write_jsonl

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# --- end to end, in a subprocess ---------------------------------------------------------------


def test_embed_2000_lines_every_id_once_with_the_right_vector(
    server: MockOpenAIServer, tmp_path: Path
) -> None:
    records = list(docs(2000))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"

    done = run_cli(
        "embed", str(source), "-o", str(out), "--base-url", server.base_url,
        "--batch-size", "100", "--dimensions", "8",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(r["id"] for r in records)
    texts = {r["id"]: r["text"] for r in records}
    for row in rows[::97]:  # each result is under the id of the text it belongs to
        assert row == {"id": row["id"], "embedding": embedding_vector(str(texts[row["id"]]), 8)}
    assert not failures_path_for(out).exists()
    assert "succeeded" in done.stderr
    assert "2,000" in done.stderr
    assert server.stats.requests_by_path["/v1/embeddings"] == 20
    assert_no_key(done.stdout, done.stderr, out.read_text())


def test_random_faults_every_id_in_out_or_failures_exactly_once(tmp_path: Path) -> None:
    records: list[object] = list(docs(400, poison=[17, 250]))
    records[99] = {"id": "not-a-string", "text": 5}
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer(fail_rate=0.25, seed=11, latency=0.002) as flaky:
        done = run_cli(
            "embed", str(source), "-o", str(out), "--base-url", flaky.base_url,
            "--batch-size", "10", "--concurrency", "8", "--dimensions", "8",
        )  # fmt: skip
        assert sum(flaky.stats.faults_injected.values()) > 0

    assert done.returncode == 3, done.stderr
    ok = [row["id"] for row in read_jsonl(out)]
    failed = read_jsonl(failures_path_for(out))
    ids = [r["id"] for r in records if isinstance(r, dict)]
    assert Counter(ok) + Counter(f["id"] for f in failed) == Counter(ids)
    by_id = {f["id"]: f for f in failed}
    assert by_id["d17"]["status"] == 400
    assert by_id["d17"]["error_type"] == "BadRequestError"
    assert by_id["d250"]["line"] == 251
    assert by_id["not-a-string"]["error_type"] == "InvalidInput"
    assert by_id["not-a-string"]["attempts"] == 0
    assert set(by_id["d17"]) == {"id", "line", "error_type", "message", "status", "attempts"}
    assert "retries" in done.stderr
    assert "429s:" in done.stderr


@POSIX_ONLY
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_killed_half_way_then_rerun_has_every_id_exactly_once(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    records = list(docs(2000))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"

    with MockOpenAIServer(latency=0.05) as slow:
        # Small vectors: the test is about the files, not about encoding floats.
        args = [
            "embed",
            str(source),
            "-o",
            str(out),
            "--base-url",
            slow.base_url,
            "--dimensions",
            "8",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "resilient_llm", *args, "--batch-size", "10",
             "--concurrency", "2"],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and count_lines_safe(out) < 200:
                time.sleep(0.05)
            proc.send_signal(signum)
            sent = time.monotonic()
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == status, stderr
        assert time.monotonic() - sent < 5
        assert "run the same command again" in stderr
        partial = read_jsonl(out)  # every line is whole: each one parses
        assert 200 <= len(partial) < 2000

        again = run_cli(*args, "--batch-size", "250")

    assert again.returncode == 0, again.stderr
    assert "skipped (resumed)" in again.stderr
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(r["id"] for r in records)


def count_lines_safe(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_malformed_lines_are_reported_with_their_numbers_and_skipped(
    server: MockOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(
        b'{"id": "a", "text": "alpha"}\n'  # 1
        b"a plain line of text\n"  # 2: id 2
        b'{"id": "b", "text": "beta"\n'  # 3: cut-off JSON
        b"\n"  # 4: blank, ignored
        b'{"id": "c"}\n'  # 5: no text
        b"caf\xe9 in latin-1\n"  # 6: not UTF-8
        b'{"id": "a", "text": "alpha again"}\n'  # 7: duplicate id
        b'{"id": "d", "text": "delta"}'  # 8: no final newline
    )
    out = tmp_path / "out.jsonl"

    code = main(["embed", str(source), "-o", str(out), "--base-url", server.base_url])

    assert code == 3
    err = capsys.readouterr().err
    for number in (3, 5, 6, 7):
        assert f"line {number}:" in err
    assert "line 4:" not in err
    assert {row["id"] for row in read_jsonl(out)} == {"a", 2, "d"}
    failed = read_jsonl(failures_path_for(out))
    assert [(f["line"], f["error_type"]) for f in failed] == [
        (3, "MalformedLine"),
        (5, "MalformedLine"),
        (6, "MalformedLine"),
        (7, "MalformedLine"),
    ]
    assert [f["id"] for f in failed] == [None, "c", None, "a"]


def test_stdin_summarize(
    server: MockOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "summaries.jsonl"
    text = b"first document to summarise\nsecond document, a little longer than the first\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))

    code = main(
        ["summarize", "-", "-o", str(out), "--base-url", server.base_url, "--max-words", "10"]
    )

    assert code == 0
    rows = sorted(read_jsonl(out), key=lambda row: str(row["id"]))
    assert [row["id"] for row in rows] == [1, 2]
    assert all(str(row["summary"]).startswith("Summary:") for row in rows)
    assert server.stats.requests_by_path["/v1/chat/completions"] == 2


def test_demo_exits_0_with_no_key() -> None:
    started = time.monotonic()
    done = run_cli("demo", key=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 15
    assert "item 137: BadRequestError (HTTP 400)" in done.stdout
    assert "299 embedded + 1 failed = 300" in done.stdout
    assert "DeadlineExceeded" in done.stdout
    assert "Traceback" not in done.stderr


# --- in process ---------------------------------------------------------------------------------


def test_resume_skips_done_ids_and_retries_the_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    records = list(docs(60))
    records[5]["text"] = "this one is BAD"
    records[40]["text"] = "BAD as well"
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = ["embed", str(source), "-o", str(out), "--batch-size", "7"]

    with MockOpenAIServer(poison_marker="BAD") as strict:
        assert main([*args, "--base-url", strict.base_url]) == 3
    assert {f["id"] for f in read_jsonl(failures_path_for(out))} == {"d5", "d40"}

    with MockOpenAIServer(poison_marker=None, record_texts=True) as lenient:
        assert main([*args, "--base-url", lenient.base_url]) == 0
        sent = [text for record in lenient.requests for text in (record.texts or [])]
    assert sorted(sent) == ["BAD as well", "this one is BAD"]
    assert not failures_path_for(out).exists()
    assert Counter(row["id"] for row in read_jsonl(out)) == Counter(r["id"] for r in records)
    assert "58" in capsys.readouterr().err  # skipped (resumed)

    with MockOpenAIServer(poison_marker="BAD") as third:
        assert main([*args, "--base-url", third.base_url, "--no-resume"]) == 3
    assert len(read_jsonl(out)) == 58  # started afresh; the two BAD ones failed again


def test_resume_removes_a_line_cut_off_by_a_crash(
    server: MockOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    source = write_jsonl(tmp_path / "in.jsonl", docs(5))
    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"d0","embedding":[0.5]}\n{"id":"d1","embedd')

    assert main(["embed", str(source), "-o", str(out), "--base-url", server.base_url]) == 0

    rows = read_jsonl(out)
    assert [row["id"] for row in rows[:1]] == ["d0"]
    assert rows[0]["embedding"] == [0.5]
    assert sorted(str(row["id"]) for row in rows) == ["d0", "d1", "d2", "d3", "d4"]


def test_a_loopback_base_url_needs_no_key(server: MockOpenAIServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.txt", ["one", "two"])
    out = tmp_path / "out.jsonl"
    assert main(["embed", str(source), "-o", str(out), "--base-url", server.base_url]) == 0
    assert len(read_jsonl(out)) == 2


def test_a_remote_base_url_without_a_key_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.txt", ["one"])
    code = main(["embed", str(source), "-o", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_rejected_key_stops_the_batch_and_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    source = write_jsonl(tmp_path / "in.jsonl", docs(500))
    out = tmp_path / "out.jsonl"
    with MockOpenAIServer(api_key="sk-the-right-one") as guarded:
        code = main(
            ["embed", str(source), "-o", str(out), "--base-url", guarded.base_url,
             "--batch-size", "10", "--concurrency", "2", "-v"]
        )  # fmt: skip
        requests = guarded.stats.total_requests
    err = capsys.readouterr().err
    assert code == 1
    assert "AuthenticationError" in err
    assert "fix it and run the same command again" in err
    assert requests < 10  # it stopped instead of sending all 50 requests
    assert_no_key(err, failures_path_for(out).read_text())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["embed", "missing.jsonl", "-o", "out.jsonl"], "input file not found"),
        (["embed", "in.txt", "-o", "nowhere/out.jsonl"], "does not exist"),
        (["embed", "in.txt", "-o", "in.txt"], "same file"),
        (["embed", "in.txt", "-o", "out.jsonl", "--concurrency", "0"], "must be >= 1"),
        (["embed", "in.txt"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    (tmp_path / "in.txt").write_text("hello\n")
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert main(["embed", "--help"]) == 0
    out = capsys.readouterr().out
    assert "resilient-llm" in out
    assert "--concurrency" in out
    assert "--dimensions" in out


def test_out_of_quota_stops_the_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    source = write_jsonl(tmp_path / "in.jsonl", docs(300))
    out = tmp_path / "out.jsonl"
    with MockOpenAIServer() as server:
        server.script(*[Fault.insufficient_quota()] * 30, path="/v1/embeddings")
        code = main(
            ["embed", str(source), "-o", str(out), "--base-url", server.base_url,
             "--batch-size", "10", "--concurrency", "1"]
        )  # fmt: skip
        requests = server.stats.total_requests
    assert code == 1
    assert requests == 1  # never retried, and nothing more sent
    assert "quota" in capsys.readouterr().err


def test_a_batch_size_over_the_api_limit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.txt").write_text("hello\n")
    argv = ["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.jsonl")]
    assert main([*argv, "--batch-size", "4096"]) == 2
    assert "at most 2048" in capsys.readouterr().err
