"""One official client per thread / per event loop, closed on its own loop (SPEC §5)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from resilient_llm import AsyncResilientClient, ClientClosedError
from resilient_llm.testing import MockOpenAIServer

from .conftest import TEST_KEY
from .test_retries import make_async, make_sync


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with every warning an error, and return what it printed."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


MODULE_LEVEL_CLIENT = """
    import asyncio, gc, threading
    from resilient_llm import AsyncResilientClient
    from resilient_llm.testing import MockOpenAIServer

    server = MockOpenAIServer().__enter__()
    client = AsyncResilientClient(api_key="sk-test", base_url=server.base_url)  # module level

    async def main():
        vectors = await asyncio.gather(*(client.embed(f"text {i}") for i in range(5)))
        assert len(vectors) == 5
        return await client.complete("hello")

    {body}

    gc.collect()
    server.__exit__(None, None, None)
    print("OK", server.stats.total_requests)
"""


def test_module_level_async_client_survives_consecutive_asyncio_runs() -> None:
    body = """
    for _ in range(3):
        assert asyncio.run(main())
    """
    result = run_python(MODULE_LEVEL_CLIENT.replace("    {body}", textwrap.indent(body, "")))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == "OK 18"


def test_module_level_async_client_serves_eight_threads_each_with_its_own_loop() -> None:
    body = """
    errors = []
    def worker():
        try:
            for _ in range(2):
                asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors, errors
    """
    result = run_python(MODULE_LEVEL_CLIENT.replace("    {body}", body))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == f"OK {8 * 2 * 6}"


def test_aclose_from_another_loop_closes_each_client_on_its_own_loop() -> None:
    code = """
    import gc, threading, trio, anyio
    from resilient_llm import AsyncResilientClient
    from resilient_llm.testing import MockOpenAIServer

    with MockOpenAIServer() as server:
        client = AsyncResilientClient(api_key="sk-test", base_url=server.base_url)
        used = threading.Event(); finished = threading.Event()

        async def long_lived_loop():
            await client.embed("from trio")
            used.set()
            while len(client._clients):      # until its client has been closed, on this loop
                await trio.sleep(0.01)
            finished.set()

        other = threading.Thread(target=trio.run, args=(long_lived_loop,))
        other.start()
        used.wait(10)

        async def main():
            await client.embed("from asyncio")
            assert len(client._clients) == 2
            await client.aclose()

        anyio.run(main)
        assert finished.wait(10)
        other.join()
        gc.collect()
    print("OK")
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == "OK"


def test_sixteen_threads_share_one_sync_client_each_with_its_own_official_client(
    server: MockOpenAIServer,
) -> None:
    barrier = threading.Barrier(16)
    with make_sync(server) as client:

        def work(i: int) -> int:
            barrier.wait()
            client.embed(f"text {i}")
            return id(client.openai)

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(work, range(16)))
        assert len(set(ids)) == 16
    assert server.stats.total_requests == 16


def _sockets_to(port: int) -> int:
    """Open file descriptors of this process connected to ``port`` on loopback."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(os.path.join("/proc/self/fd", name)) in inodes:
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_every_socket(server: MockOpenAIServer) -> None:
    client = make_sync(server)
    used = threading.Barrier(5)
    release = threading.Event()

    def work(i: int) -> None:
        client.embed(f"text {i}")
        used.wait()
        release.wait()  # the thread outlives close(): close() itself must release its client

    workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    client.embed("main thread too")
    used.wait()
    assert _sockets_to(server.port) == 5
    client.close()
    assert _sockets_to(server.port) == 0
    release.set()
    for worker in workers:
        worker.join()
    with pytest.raises(ClientClosedError):
        client.embed("after close")


def test_thread_end_closes_that_threads_client(server: MockOpenAIServer) -> None:
    with make_sync(server) as client:
        worker = threading.Thread(target=lambda: client.embed("x"))
        worker.start()
        worker.join()
        deadline = time.monotonic() + 2
        while len(client._clients) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(client._clients) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_never_reuses_the_parents_connections(server: MockOpenAIServer) -> None:
    with make_sync(server) as client:
        client.embed("parent warms a keep-alive connection")
        assert server.stats.connections_opened == 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                client.embed("child")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.stats.connections_opened == 2  # the child dialled its own
        client.embed("parent again")  # and the parent's connection is intact
        assert server.stats.connections_opened == 2
        assert server.stats.total_requests == 3


@pytest.mark.anyio
async def test_async_client_outside_a_loop_and_after_close(server: MockOpenAIServer) -> None:
    client = make_async(server)
    await client.embed("x")
    await client.aclose()
    assert len(client._clients) == 0
    with pytest.raises(ClientClosedError):
        await client.embed("after close")


def test_async_client_used_outside_any_loop_says_so() -> None:
    client = AsyncResilientClient(api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(RuntimeError, match="running event loop"):
        _ = client.openai


def test_trio_and_asyncio_runs_of_one_client_back_to_back(server: MockOpenAIServer) -> None:
    client = make_async(server)

    async def main() -> str:
        return await client.complete("hello")

    for backend in ("asyncio", "trio", "asyncio"):
        assert anyio.run(main, backend=backend)
    assert len(client._clients) == 0  # each loop's client was closed as its loop ended


def test_client_dropped_without_close_releases_its_connections(server: MockOpenAIServer) -> None:
    client = make_sync(server)
    client.embed("x")
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None
    deadline = time.monotonic() + 2
    while server.stats.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stats.open_connections == 0


def test_batches_on_a_closed_client_fail_at_once(server: MockOpenAIServer) -> None:
    client = make_sync(server)
    client.close()
    assert client.is_closed
    with pytest.raises(ClientClosedError):
        client.embed_batch(["a", "b"])
    with pytest.raises(ClientClosedError):
        client.summarize_batch(["a"])
    with pytest.raises(ClientClosedError):
        client.map(str, [1])


@pytest.mark.anyio
async def test_async_batches_on_a_closed_client_fail_at_once(server: MockOpenAIServer) -> None:
    client = make_async(server)
    await client.aclose()
    assert client.is_closed
    with pytest.raises(ClientClosedError):
        await client.embed_batch(["a", "b"])
    with pytest.raises(ClientClosedError):
        client.iter_embed_batch(["a"])
