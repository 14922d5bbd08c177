"""``embed``/``summarize --via batch`` and ``batch status|cancel|collect`` (SPEC §8, §10).

The command line runs in a subprocess against the mock server in a process of its own
(``resilient-llm mock-server``), as a user runs them; what the server holds is read over HTTP
(``GET /v1/batches``, ``GET /v1/files``) and from the summary it prints when it stops.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_llm._messages import one_line
from resilient_llm.cli import main
from resilient_llm.cli.io import failures_path_for
from resilient_llm.testing import embedding_vector
from resilient_llm.testing._cli import parse_batch_setting

from ._helpers import assert_no_key, cli_env, docs, read_jsonl, run_cli, summary_count, write_jsonl

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
DIMS = "8"


# --- the mock server in a process of its own ---------------------------------------------------


class ServerProcess:
    """``python -m resilient_llm mock-server``: its URL, what it holds, its closing summary."""

    def __init__(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resilient_llm", "mock-server", "--port", "0", *options],
            env=cli_env(key=None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        assert self.base_url.startswith("http://"), self.process.communicate()[1]

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            self.base_url.rstrip("/") + path, headers={"Authorization": "Bearer sk-test"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def batches(self) -> list[dict[str, Any]]:
        """Every batch the server holds, oldest first (``GET /v1/batches``, every page)."""
        found: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.get(f"/batches?limit=100{after}")
            found += page["data"]
            if not page["has_more"]:
                return found[::-1]
            after = f"&after={page['data'][-1]['id']}"

    def uploads(self) -> list[dict[str, Any]]:
        return [f for f in self.get("/files")["data"] if f["purpose"] == "batch"]

    def stop(self) -> str:
        """Stop it like Ctrl-C; its summary of what it served."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=30)
        return err


@contextlib.contextmanager
def mock_server(*options: str) -> Iterator[ServerProcess]:
    server = ServerProcess(*options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fast_server() -> Iterator[ServerProcess]:
    """Batches end the first time they are looked at after their creation."""
    with mock_server() as server:
        yield server


@pytest.fixture(scope="module")
def clocked_server() -> Iterator[ServerProcess]:
    """Batches run an hour of the server's clock, their lines spread over it; each look at a
    batch (``GET /v1/batches/{id}``) moves that clock 10 minutes: six looks end a batch,
    however fast or slow the machine."""
    with mock_server(
        "--batch", "processing_seconds=3600", "--batch", "advance_per_poll=600"
    ) as server:
        yield server


def new_batches(server: ServerProcess, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    known = {b["id"] for b in before}
    return [b for b in server.batches() if b["id"] not in known]


def assert_one_batch_per_shard(batches: list[dict[str, Any]], shards: int) -> None:
    """One job, each shard sent once: no batch was created twice."""
    assert len({b["metadata"]["resilient_llm_job"] for b in batches}) == 1
    tags = Counter(b["metadata"]["resilient_llm_shard"] for b in batches)
    assert tags == Counter(str(n) for n in range(shards)), tags


# --- running the command line ----------------------------------------------------------------


def batch_args(source: Path, out: Path, server: ServerProcess, *more: str) -> list[str]:
    return [
        "embed", str(source), "-o", str(out), "--base-url", server.base_url,
        "--dimensions", DIMS, "--via", "batch", "--lines-per-batch", "10",
        "--poll-interval", "0.05", *more,
    ]  # fmt: skip


# Runs the real command line, after patching one call of the official client (or OUT's writer)
# to kill the process with SIGKILL at one moment: the library and the command line are untouched.
KILLER = r"""
import json, os, signal, sys

import openai.resources.batches
import openai.resources.files

from resilient_llm.cli import io, main

moment, argv = sys.argv[1], sys.argv[2:]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def die_after(cls, name, nth):
    original, calls = getattr(cls, name), []

    def patched(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == nth:
            die()
        return result

    setattr(cls, name, patched)


if moment == "after_upload":  # the first input file uploaded, its id not written down
    die_after(openai.resources.files.Files, "create", 1)
elif moment == "after_create":  # the first batch created, its id not written down
    die_after(openai.resources.batches.Batches, "create", 1)
elif moment == "mid_download":  # the second result file downloaded, its answers not recorded
    die_after(openai.resources.files.Files, "content", 2)
elif moment == "mid_write":  # the job is over; OUT gets 14 lines and half of the 15th
    write, lines = io.JsonlWriter.write, []

    def torn(self, record):
        if self.path.name == "out.jsonl":
            lines.append(1)
            if len(lines) == 15:
                data = json.dumps(record).encode()
                self._file.write(data[: len(data) // 2])
                die()
        return write(self, record)

    io.JsonlWriter.write = torn
sys.exit(main(argv))
"""


def run_killed(moment: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILLER, moment, *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_embedded_once(out: Path, records: list[dict[str, object]]) -> None:
    """Every id exactly once in OUT, with the vector the server gives its text."""
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(r["id"] for r in records)
    texts = {r["id"]: str(r["text"]) for r in records}
    for row in rows:
        assert row["embedding"] == embedding_vector(texts[row["id"]], int(DIMS)), row["id"]


def by_id(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {json.dumps(row["id"]): row for row in rows}


def failure_facts(rows: list[dict[str, object]]) -> dict[str, tuple[object, ...]]:
    """What a failure says, as a person reads it (the batch path words the server's error
    body as openai 2.x does; the line is the same)."""
    facts = {}
    for row in rows:
        status = row["status"] if isinstance(row["status"], int) else None
        read = one_line(str(row["error_type"]), str(row["message"]), status=status)
        said = read if status is not None else row["error_type"]
        facts[json.dumps(row["id"])] = (row["line"], row["error_type"], status, said)
    return facts


def job_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if ".batch.json" in p.name)


# --- round trips ------------------------------------------------------------------------------


def test_embed_via_batch_writes_what_the_live_path_writes(
    fast_server: ServerProcess, tmp_path: Path
) -> None:
    records: list[object] = list(docs(33, poison=[7]))
    records[20] = {"id": "not-a-string", "text": 5}
    records.insert(12, "{not json")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    live, out = tmp_path / "live.jsonl", tmp_path / "out.jsonl"
    before = fast_server.batches()

    by_live = run_cli(
        "embed", str(source), "-o", str(live), "--base-url", fast_server.base_url,
        "--dimensions", DIMS,
    )  # fmt: skip
    by_batch = run_cli(*batch_args(source, out, fast_server))

    assert (by_live.returncode, by_batch.returncode) == (3, 3), by_batch.stderr
    assert by_id(read_jsonl(out)) == by_id(read_jsonl(live))  # the same vectors
    assert len(read_jsonl(out)) == 31
    failures = read_jsonl(failures_path_for(out))
    assert failure_facts(failures) == failure_facts(read_jsonl(failures_path_for(live)))
    assert {f["id"]: (f["line"], f["error_type"]) for f in failures} == {
        "d7": (8, "BadRequestError"),
        "not-a-string": (22, "InvalidInput"),
        None: (13, "MalformedLine"),
    }
    for row in ("succeeded", "failed", "  malformed lines"):
        assert summary_count(by_batch.stderr, row) == summary_count(by_live.stderr, row)
    assert "resilient-llm embed: done" in by_batch.stderr
    assert_one_batch_per_shard(new_batches(fast_server, before), 4)  # 32 texts sent, 10 a batch
    assert job_files(out) == []  # a finished job's state, record and request files are removed
    assert_no_key(by_batch.stdout, by_batch.stderr, out.read_text())


def test_summarize_via_batch_writes_what_the_live_path_writes(
    fast_server: ServerProcess, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.txt", [f"note {i} about pears and plums" for i in range(6)])
    live, out = tmp_path / "live.jsonl", tmp_path / "out.jsonl"
    common = ["--base-url", fast_server.base_url, "--max-words", "12"]

    by_live = run_cli("summarize", str(source), "-o", str(live), *common)
    batch = ["summarize", str(source), "-o", str(out), *common, "--via", "batch", "--no-wait"]
    submitted = run_cli(*batch)  # the batch is created, not looked at yet
    by_batch = run_cli(*batch)  # one look: it ended, the results are written

    assert submitted.returncode == 75, submitted.stderr
    assert (by_live.returncode, by_batch.returncode) == (0, 0), by_batch.stderr
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5, 6]  # plain text: ids are line numbers
    assert all(isinstance(row["summary"], str) and row["summary"] for row in rows)
    assert by_id(rows) == by_id(read_jsonl(live))


# --- kill -9 at the dangerous moments, then the same command again ---------------------------


@POSIX_ONLY
@pytest.mark.parametrize("moment", ["after_upload", "after_create", "mid_download", "mid_write"])
def test_kill_9_then_the_same_command_writes_every_id_once(
    fast_server: ServerProcess, tmp_path: Path, moment: str
) -> None:
    records = list(docs(30))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = batch_args(source, out, fast_server)
    before = fast_server.batches()
    uploads_before = len(fast_server.uploads())

    killed = run_killed(moment, args)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    made = new_batches(fast_server, before)
    state = json.loads((tmp_path / "out.batch.json").read_text())
    stages = [shard["stage"] for shard in state["shards"]]
    if moment == "after_upload":
        assert made == []
        assert stages == ["planned"] * 3
        assert len(fast_server.uploads()) == uploads_before + 1
    elif moment == "after_create":
        assert len(made) == 1
        assert state["shards"][0]["batch_id"] is None
    elif moment == "mid_download":
        assert len(made) == 3
        assert stages.count("collected") == 1
        assert read_jsonl(out) == []
    else:
        assert out.read_bytes().count(b"\n") == 14
        assert not out.read_bytes().endswith(b"\n")  # half of the 15th line

    again = run_cli(*args)

    assert again.returncode == 0, again.stderr
    assert_embedded_once(out, records)
    assert not failures_path_for(out).exists()
    assert_one_batch_per_shard(new_batches(fast_server, before), 3)
    assert job_files(out) == []
    if moment == "mid_write":
        assert "removed an incomplete last line" in again.stderr
        assert summary_count(again.stderr, "skipped (resumed)") == 14
        assert summary_count(again.stderr, "succeeded") == 16
    else:
        assert f"batch job {state['job_id']}: resuming" in again.stderr


# --- submit now, collect later; status; cancel; Ctrl-C ----------------------------------------


def test_no_wait_then_status_then_collect(clocked_server: ServerProcess, tmp_path: Path) -> None:
    records = list(docs(25))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    before = clocked_server.batches()

    submitted = run_cli(*batch_args(source, out, clocked_server, "--no-wait"))

    assert submitted.returncode == 75, submitted.stderr
    assert f"resilient-llm batch collect {tmp_path / 'out.batch.json'}" in submitted.stderr
    assert read_jsonl(out) == []
    made = new_batches(clocked_server, before)
    assert len(made) == 3
    assert all(b["status"] in ("validating", "in_progress") for b in made)

    status = run_cli("batch", "status", str(tmp_path / "out.batch.json"))

    assert status.returncode == 0, status.stderr
    for batch in made:
        assert batch["id"] in status.stdout
    assert "25 inputs: 0 done" in status.stdout
    assert f"{source} → {out}" in status.stdout

    # One more look each: the clock is now 50 minutes into the batches, not done yet.
    looked = run_cli("batch", "collect", str(tmp_path / "out.batch.json"), "--no-wait")
    assert looked.returncode == 75, looked.stderr
    assert read_jsonl(out) == []

    collected = run_cli("batch", "collect", str(tmp_path / "out.batch.json"))

    assert collected.returncode == 0, collected.stderr
    assert_embedded_once(out, records)
    assert_one_batch_per_shard(new_batches(clocked_server, before), 3)
    assert job_files(out) == []
    assert summary_count(collected.stderr, "lines read") == 25


def test_cancel_then_collect_fails_what_did_not_run_and_sends_nothing_again(
    clocked_server: ServerProcess, tmp_path: Path
) -> None:
    records = list(docs(30))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out, state = tmp_path / "out.jsonl", tmp_path / "out.batch.json"
    before = clocked_server.batches()
    # Two batches run, the third shard waits for one of them to end.
    more = ("--no-wait", "--max-in-flight", "2")
    assert run_cli(*batch_args(source, out, clocked_server, *more)).returncode == 75
    # Looking at the two batches moves the server's clock 20 minutes: a third of each ran.
    assert run_cli("batch", "status", str(state)).returncode == 0

    cancelled = run_cli("batch", "cancel", str(state))

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"resilient-llm batch collect {state}" in cancelled.stderr
    made = new_batches(clocked_server, before)
    assert [b["status"] for b in made] == ["cancelled", "cancelled"]
    ran = sum(b["request_counts"]["completed"] for b in made)
    assert 0 < ran < 20

    collected = run_cli("batch", "collect", str(state))

    assert collected.returncode == 3, collected.stderr
    rows, failures = read_jsonl(out), read_jsonl(failures_path_for(out))
    assert len(rows) == ran  # the answers the server had before the cancel are kept
    texts = {r["id"]: str(r["text"]) for r in records}
    assert all(row["embedding"] == embedding_vector(texts[row["id"]], 8) for row in rows)
    every_id = Counter(r["id"] for r in rows) + Counter(f["id"] for f in failures)
    assert every_id == Counter(list(texts))
    assert {f["error_type"] for f in failures} == {"BatchLineError"}
    never_sent = {f["id"] for f in failures if f["attempts"] == 0}
    assert never_sent == {f"d{i}" for i in range(20, 30)}  # the shard that never had a batch
    assert "the job was cancelled" in collected.stderr
    assert len(new_batches(clocked_server, before)) == 2  # nothing was sent again
    assert job_files(out) == []


@POSIX_ONLY
def test_ctrl_c_leaves_the_batches_running_and_the_same_command_resumes(
    clocked_server: ServerProcess, tmp_path: Path
) -> None:
    records = list(docs(30))
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = batch_args(source, out, clocked_server)
    before = clocked_server.batches()
    # The first look at the new batches comes after 30 s: Ctrl-C comes first.
    running = subprocess.Popen(
        [sys.executable, "-m", "resilient_llm", *args, "--poll-interval", "30"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(new_batches(clocked_server, before)) < 3:
            assert running.poll() is None, running.communicate()[1]
            assert time.monotonic() < deadline, "the job never created its batches"
            time.sleep(0.05)
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()

    assert running.returncode == 130, err
    assert "interrupted (Ctrl-C)" in err
    assert "keep running on the server: run the same command again" in err
    assert f"resilient-llm batch cancel {tmp_path / 'out.batch.json'}" in err
    assert "Traceback" not in err
    made = new_batches(clocked_server, before)
    assert {b["status"] for b in made} <= {"validating", "in_progress"}  # still running
    assert read_jsonl(out) == []

    again = run_cli(*args)

    assert again.returncode == 0, again.stderr
    assert_embedded_once(out, records)
    assert_one_batch_per_shard(new_batches(clocked_server, before), 3)


# --- a server without the Batch API; usage errors ---------------------------------------------


def test_a_server_without_the_batch_api_gets_one_line_and_exit_1(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(5))
    out = tmp_path / "out.jsonl"
    with mock_server("--no-batch-api") as server:
        done = run_cli(*batch_args(source, out, server))
        served = server.stop()

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("resilient-llm embed: http://127.0.0.1:")
    assert "has no Batch API (HTTP 404)" in lines[0]
    assert "without --via batch" in lines[0]
    assert "served 1 requests (404: 1)" in served  # one look, no retry storm
    assert job_files(out) == []  # nothing was sent: nothing to resume


def test_resume_refusals_read_well(
    fast_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(4))
    out = tmp_path / "out.jsonl"
    args = batch_args(source, out, fast_server, "--no-wait")
    assert main(args) == 75
    capsys.readouterr()

    assert main([a if a != DIMS else "16" for a in args]) == 2
    err = capsys.readouterr().err
    assert "made with --dimensions 8 (this command: 16)" in err

    text = source.read_text()
    for changed in (
        text.replace("document 2", "document two"),  # a text: the library's fingerprint
        text.rsplit("\n", 2)[0] + "\n",  # an input less: the record's ids
    ):
        source.write_text(changed)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "IN no longer holds the inputs of batch job" in err
        assert "resilient-llm batch collect" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-", "--via", "batch"], "not - (stdin)"),
        (["IN", "--via", "batch", "--too-long", "truncate"], "--too-long truncate"),
        (["IN", "--via", "batch", "--rpm", "60"], "--rpm and --tpm"),
        (["IN", "--no-wait"], "--no-wait: for --via batch only"),
        (["IN", "--via", "batch", "--lines-per-batch", "50001"], "at most 50,000"),
    ],
)
def test_batch_options_are_checked_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", docs(2))
    argv = ["embed", *(str(source) if a == "IN" else a for a in args), "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.batch.json").exists()


@pytest.mark.parametrize("action", ["status", "cancel", "collect"])
def test_batch_commands_without_a_job_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert main(["batch", action, str(tmp_path / "none.batch.json")]) == 2
    assert f"resilient-llm batch {action}: no batch job state at" in capsys.readouterr().err


def test_mock_server_batch_settings_parse() -> None:
    assert parse_batch_setting("processing_seconds=2.5") == ("processing_seconds", 2.5)
    assert parse_batch_setting("max_lines=10") == ("max_lines", 10)
    assert parse_batch_setting("shuffle=false") == ("shuffle", False)
    assert parse_batch_setting("enqueued_token_limit=none") == ("enqueued_token_limit", None)
    for bad in ("processing_seconds", "=3", "x=soon"):
        with pytest.raises(ValueError, match=r"NAME=VALUE|not a number"):
            parse_batch_setting(bad)
