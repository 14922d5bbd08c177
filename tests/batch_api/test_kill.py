"""kill -9 of a process running a job, at each dangerous moment, then a resume in another.

Every input ends exactly once with its right vector, and no shard ever gets two batches.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resilient_llm.batch_api import BatchJob
from resilient_llm.testing import Fault, MockOpenAIServer

from .support import (
    DIMS,
    assert_accounted_once,
    assert_no_duplicate_batch,
    assert_vectors,
    fast,
    job_batches,
    sync_client,
)

WORKER = str(Path(__file__).with_name("worker.py"))
COUNT = 30  # three shards of ten


def run_worker(server: MockOpenAIServer, tmp_path: Path, moment: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            WORKER,
            server.base_url,
            str(tmp_path / "job.json"),
            str(COUNT),
            moment,
            str(tmp_path / "out.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def resume_and_check(server: MockOpenAIServer, tmp_path: Path) -> None:
    """Run the same job again in this process: it resumes from the state file."""
    inputs = [f"document number {i}" for i in range(COUNT)]
    with sync_client(server) as client:
        job = BatchJob.embeddings(
            client, inputs, state=tmp_path / "job.json", dimensions=DIMS, options=fast()
        )
        result = job.run()
    assert_accounted_once(result, COUNT)
    assert result.ok
    assert_vectors(result, inputs)
    assert_no_duplicate_batch(server)
    shards = sorted(int(b["metadata"]["resilient_llm_shard"]) for b in job_batches(server))
    assert shards == [0, 1, 2]  # one batch per shard, over both processes


@pytest.mark.parametrize("moment", ["after_upload", "after_create"])
def test_kill_between_a_call_and_its_state_write(tmp_path: Path, moment: str) -> None:
    with MockOpenAIServer() as server:
        killed = run_worker(server, tmp_path, moment)
        killed.communicate(timeout=60)
        assert killed.returncode == -signal.SIGKILL
        uploads = [f for f in server.batches.files() if f["purpose"] == "batch"]
        assert len(uploads) == 1
        assert len(job_batches(server)) == (1 if moment == "after_create" else 0)
        state = json.loads((tmp_path / "job.json").read_text())
        written = state["shards"][0]["file_id"]
        assert (written is None) == (moment == "after_upload")
        assert state["shards"][0]["batch_id"] is None

        resume_and_check(server, tmp_path)
        uploads = [f for f in server.batches.files() if f["purpose"] == "batch"]
        # After a kill before the file id was written, that upload is orphaned: one more file.
        assert len(uploads) == (4 if moment == "after_upload" else 3)


def test_kill_in_the_middle_of_a_download(tmp_path: Path) -> None:
    with MockOpenAIServer() as server:
        server.batches.fault_downloads(Fault.drip(0.005))  # the first result file: ~10 s
        worker = run_worker(server, tmp_path, "none")
        try:
            deadline = time.monotonic() + 30
            while not any(p.endswith("/content") for p in server.stats.requests_by_path):
                assert time.monotonic() < deadline, "the worker never started a download"
                assert worker.poll() is None, worker.communicate()[1].decode()
                time.sleep(0.01)
            time.sleep(0.2)  # some bytes in
            assert worker.poll() is None
            worker.send_signal(signal.SIGKILL)
        finally:
            worker.communicate(timeout=60)
        assert worker.returncode == -signal.SIGKILL
        state = json.loads((tmp_path / "job.json").read_text())
        assert "collected" not in [s["stage"] for s in state["shards"]]
        created = len(job_batches(server))

        resume_and_check(server, tmp_path)
        assert len(job_batches(server)) == 3 >= created
        downloads = [p for p in server.stats.requests_by_path if p.endswith("/content")]
        cut = next(p for p in downloads if server.stats.requests_by_path[p] == 2)
        assert cut  # the file cut off mid-download was downloaded again, whole
