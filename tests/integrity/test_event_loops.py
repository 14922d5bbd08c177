"""Issue 12, row 7 (SPEC §5): an event loop that ends or is closed without ``aclose()`` keeps no
socket and no official client alive.

The pattern of Celery tasks, Jupyter cells and older test runners: a fresh asyncio loop per
call, ``run_until_complete``, ``loop.close()``, and a module-level client never closed. Today
every loop leaves its `AsyncOpenAI` and its socket behind; under ``ulimit -n 256`` loop 249
fails.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
import weakref

import pytest

from resilient_llm.testing import MockOpenAIServer, embedding_vector

from ._public import DIMS, KEY, async_client, same_vector

LOOPS = 50
HAS_PROC = os.path.isdir("/proc/self/fd")


def open_sockets() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def _settle(server: MockOpenAIServer, baseline: int, within: float = 3.0) -> int:
    """The server notices a client's close a moment later: poll its open connections."""
    end = time.monotonic() + within
    while server.stats.open_connections > baseline and time.monotonic() < end:
        time.sleep(0.02)
    return server.stats.open_connections


# A loop closed without its shutdown can run nothing: the sockets left on it are closed when
# collected, with asyncio's "unclosed transport" ResourceWarning (shown in development mode only;
# closing them quietly would take the private state of asyncio's transports).
@pytest.mark.skipif(not HAS_PROC, reason="counts sockets through /proc")
@pytest.mark.filterwarnings("ignore:unclosed transport <_SelectorSocketTransport:ResourceWarning")
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_fifty_loops_closed_without_aclose(server: MockOpenAIServer) -> None:
    client = async_client(server.base_url)
    official: list[weakref.ref[object]] = []

    async def one(i: int) -> list[float]:
        vector = await client.embed(f"loop {i}", dimensions=DIMS)
        official.append(weakref.ref(client.openai))
        return vector

    gc.collect()
    sockets_before = open_sockets()
    connections_before = server.stats.open_connections
    for i in range(LOOPS):
        loop = asyncio.new_event_loop()
        try:
            vector = loop.run_until_complete(one(i))
        finally:
            loop.close()
        assert same_vector(vector, embedding_vector(f"loop {i}", DIMS))
    # A dead loop's client is let go when a collection starts (the library's gc callback);
    # what that frees in reference cycles goes in the next pass. A client something still
    # holds stays alive through any number of passes.
    for _ in range(3):
        gc.collect()
    alive = sum(1 for ref in official if ref() is not None)
    connections_after = _settle(server, connections_before)
    sockets_after = open_sockets()
    assert len({id(ref) for ref in official}) == LOOPS
    assert alive == 0, f"{alive} of {LOOPS} official AsyncOpenAI clients are still alive"
    # One socket on each side of the loopback per leaked connection; allow one of each.
    assert connections_after <= connections_before + 1, (
        f"the server still has {connections_after - connections_before} connections open"
    )
    assert sockets_after <= sockets_before + 2, f"{sockets_after - sockets_before} more sockets"
    assert server.stats.total_requests == LOOPS


SCRIPT = r"""
import asyncio, resource, sys
from resilient_llm import AsyncResilientClient
from resilient_llm.testing import embedding_vector

url, key, loops = sys.argv[1], sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
client = AsyncResilientClient(base_url=url, api_key=key, deadline=10)
for i in range(loops):
    loop = asyncio.new_event_loop()
    try:
        vector = loop.run_until_complete(client.embed(f"loop {i}", dimensions=8))
    except BaseException as exc:
        print(f"loop {i} failed: {exc!r}")
        sys.exit(1)
    finally:
        loop.close()
    assert vector == embedding_vector(f"loop {i}", 8), i
print(f"{loops} loops ok")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_three_hundred_loops_under_a_256_descriptor_limit(server: MockOpenAIServer) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, server.base_url, KEY, "300"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "300 loops ok" in done.stdout
    assert server.stats.total_requests == 300
