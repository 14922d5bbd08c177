"""Issue 12, row 6 (SPEC §5): after ``os.fork()`` everything works in the child, batches
included, even when the parent had run batches (worker threads do not survive a fork).

Each scenario runs in a child interpreter that forks; the forked child must finish within a
bound, so a hang fails the test instead of hanging the suite. Today the child hangs forever.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from resilient_llm.testing import MockOpenAIServer

from ._public import KEY

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")

SCRIPT = r"""
import asyncio, os, sys, time, traceback
from resilient_llm import AsyncResilientClient, ResilientClient, RetryPolicy
from resilient_llm.testing import embedding_vector

url, key, mode = sys.argv[1:4]
texts = [f"fork text {i}" for i in range(64)]
options = dict(base_url=url, api_key=key, deadline=10,
               retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05))


def check(result, who):
    wrong = [i for i, v in enumerate(result.values) if v != embedding_vector(texts[i], 8)]
    if not result.ok or wrong:
        print(f"{who}: {len(result.failures)} failures, {len(wrong)} wrong", result.summary())
        return False
    return True


def sync_batch(client):
    return client.embed_batch(texts, batch_size=4, max_concurrency=4, dimensions=8)


async def async_batch(client):
    return await client.embed_batch(texts, batch_size=4, max_concurrency=4, dimensions=8)


def batch(client):
    return sync_batch(client) if mode == "sync" else asyncio.run(async_batch(client))


def run_child(client):
    try:
        ok = check(batch(client), "child")
        if mode == "sync":
            single = client.embed("child single", dimensions=8)
            ok = ok and single == embedding_vector("child single", 8)
        sys.stdout.flush()
        os._exit(0 if ok else 3)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(4)


client = ResilientClient(**options) if mode == "sync" else AsyncResilientClient(**options)
parent_ok = check(batch(client), "parent")
sys.stdout.flush(); sys.stderr.flush()
pid = os.fork()
if pid == 0:
    run_child(client)
give_up = time.monotonic() + float(sys.argv[4])
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > give_up:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("CHILD HUNG")
        sys.exit(2)
    time.sleep(0.05)
code = os.waitstatus_to_exitcode(status)
# The parent keeps working after the fork too.
after = check(batch(client), "parent after")
if mode == "sync":
    client.close()
print(f"child exit {code}; parent ok {parent_ok} {after}")
sys.exit(code or (0 if parent_ok and after else 5))
"""

CHILD_BOUND = 15.0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_batch_in_a_forked_child_after_batches_in_the_parent(mode: str) -> None:
    with MockOpenAIServer() as server:
        try:
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, server.base_url, KEY, mode, str(CHILD_BOUND)],
                capture_output=True,
                text=True,
                timeout=CHILD_BOUND + 45,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the forking process did not finish: {exc}")
        answered = server.stats.responses_by_status.get(200, 0)
    output = done.stdout + done.stderr
    assert "CHILD HUNG" not in output, f"the child hung for {CHILD_BOUND:.0f} s\n{output[-2000:]}"
    assert done.returncode == 0, output[-3000:]
    # Parent, child and parent again each sent 16 requests that the server answered.
    assert answered >= 48, answered
