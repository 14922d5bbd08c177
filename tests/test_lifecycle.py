"""One official client per thread / per event loop, closed on its own loop (SPEC §5)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from openai import AsyncOpenAI

from resilient_llm import AsyncResilientClient, ClientClosedError
from resilient_llm._lifecycle import PerProcess
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


# -- event loops that end without aclose() keep nothing alive (issue 12 row 7) ----------------

SCRIPTS = Path(__file__).parent / "lifecycle"
HAS_PROC = os.path.isdir("/proc/self/fd")


class TrackedClients:
    """An ``openai_factory`` that remembers, weakly, every ``AsyncOpenAI`` it builds."""

    def __init__(self, server: MockOpenAIServer) -> None:
        self.server = server
        self.built: list[weakref.ref[AsyncOpenAI]] = []

    def __call__(self, http_client: Any) -> AsyncOpenAI:
        made = AsyncOpenAI(
            api_key=TEST_KEY, base_url=self.server.base_url, http_client=http_client, max_retries=0
        )
        self.built.append(weakref.ref(made))
        return made

    def alive(self) -> list[AsyncOpenAI]:
        gc.collect()
        return [client for ref in self.built if (client := ref()) is not None]


# A loop closed without its shutdown (``run_until_complete`` then ``close()``) can run nothing:
# the client it leaves is released, not closed, and the sockets left on the dead loop are closed
# when collected, with asyncio's "unclosed transport" ResourceWarning (or the socket's own, as
# the collector finalizes either first); both show in development mode only. The tests that close
# loops that way collect within the test and count the sockets themselves.
_LEFT_ON_A_CLOSED_LOOP = (
    "ignore:unclosed transport <_SelectorSocketTransport:ResourceWarning",
    "ignore:unclosed <socket.socket:ResourceWarning",
)


def closes_loops_without_shutdown(test: Callable[..., None]) -> Callable[..., None]:
    for spec in _LEFT_ON_A_CLOSED_LOOP:
        test = pytest.mark.filterwarnings(spec)(test)
    return test


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _run_until_closed(client: AsyncResilientClient, text: str, *, shutdown: bool = False) -> None:
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(client.embed(text))
        if shutdown:
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@closes_loops_without_shutdown
@pytest.mark.skipif(not HAS_PROC, reason="counts file descriptors through /proc")
def test_fifty_loops_closed_without_aclose_keep_no_client_or_socket(
    server: MockOpenAIServer,
) -> None:
    tracked = TrackedClients(server)
    client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)
    gc.collect()
    fds_before = _open_fds()
    for i in range(50):
        _run_until_closed(client, f"loop {i}")
        if i % 10 == 9:
            # Only the loop just closed may still hold its client: the next get() releases it.
            assert len(tracked.alive()) <= 1
            assert _sockets_to(server.port) <= 1
    assert len(tracked.built) == 50
    assert server.stats.total_requests == 50
    assert len(tracked.alive()) <= 1
    assert _sockets_to(server.port) <= 1
    deadline = time.monotonic() + 5  # the server notices closed connections in its own thread
    while server.stats.open_connections > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _open_fds() <= fds_before + 2  # that one client's socket, and the server's end
    anyio.run(client.aclose)  # from one more loop: releases it without awaiting on a dead loop
    assert tracked.alive() == []
    assert _sockets_to(server.port) == 0
    assert len(client._clients) == 0


@pytest.mark.skipif(not HAS_PROC, reason="counts file descriptors through /proc")
def test_a_loop_closed_after_shutdown_asyncgens_closes_its_client_on_that_loop(
    server: MockOpenAIServer,
) -> None:
    tracked = TrackedClients(server)
    client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)
    for i in range(5):
        _run_until_closed(client, f"loop {i}", shutdown=True)
        # Nothing else ran after that loop: its own shutdown closed the client, on that loop.
        assert len(client._clients) == 0
        assert tracked.alive() == []
        assert _sockets_to(server.port) == 0
    assert server.stats.connections_opened == 5


def _run_script(
    *args: str, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


def _at_most_256_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.skipif(not HAS_PROC, reason="counts file descriptors through /proc")
def test_three_hundred_loops_closed_without_aclose_fit_in_256_file_descriptors() -> None:
    # The default warning filters, as a user runs: asyncio's "unclosed transport" ResourceWarning
    # for sockets left on a loop closed without shutdown is its own, shown in development mode.
    # Anything else (a task destroyed while pending, "Event loop is closed", a coroutine never
    # awaited) would reach stderr.
    result = _run_script(
        "-W",
        "error::RuntimeWarning",
        str(SCRIPTS / "many_loops.py"),
        "300",
        preexec_fn=_at_most_256_files,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    figures = json.loads(result.stdout)
    assert figures["requests"] == 300
    assert figures["built"] == 300
    assert figures["peak_alive"] <= 1
    assert figures["alive_after_loops"] <= 1
    assert figures["sockets_after_loops"] <= 1
    assert figures["fds_after_loops"] <= figures["fds_before"] + 2
    assert figures["alive_after_aclose"] == 0
    assert figures["sockets_after_aclose"] == 0
    assert figures["registry_after_aclose"] == 0


def test_loops_shut_down_the_documented_way_leave_no_warning_at_all() -> None:
    result = _run_script("-W", "error", str(SCRIPTS / "many_loops.py"), "30", "--shutdown")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    figures = json.loads(result.stdout)
    assert figures["requests"] == 30
    assert figures["peak_alive"] == 0
    assert figures["alive_after_loops"] == figures["sockets_after_loops"] == 0
    assert figures["registry_after_loops"] == 0


@pytest.mark.skipif(not HAS_PROC, reason="counts sockets through /proc")
def test_trio_runs_without_aclose_leave_nothing_behind(server: MockOpenAIServer) -> None:
    trio = pytest.importorskip("trio")
    tracked = TrackedClients(server)
    client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)

    async def main(i: int) -> None:
        assert await client.embed(f"trio run {i}")

    for i in range(10):
        trio.run(main, i)
        assert len(client._clients) == 0
    assert len(tracked.built) == 10
    assert tracked.alive() == []
    assert _sockets_to(server.port) == 0
    assert server.stats.total_requests == 10


@closes_loops_without_shutdown
@pytest.mark.skipif(not HAS_PROC, reason="counts sockets through /proc")
def test_every_way_a_loop_ends_in_turn_leaves_nothing_behind(server: MockOpenAIServer) -> None:
    trio = pytest.importorskip("trio")
    tracked = TrackedClients(server)
    client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)

    async def main() -> None:
        assert await client.embed("hello")

    for _ in range(3):
        asyncio.run(main())
        _run_until_closed(client, "closed without shutdown")
        trio.run(main)  # its first call releases the client the closed loop left behind
        assert len(client._clients) == 0
        assert tracked.alive() == []
        assert _sockets_to(server.port) == 0
    assert server.stats.total_requests == 9


def test_a_client_dropped_while_its_loop_runs_is_closed_on_that_loop(
    server: MockOpenAIServer,
) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        tracked = TrackedClients(server)
        client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)
        asyncio.run_coroutine_threadsafe(client.embed("x"), loop).result(10)
        assert server.stats.open_connections == 1
        del client
        gc.collect()  # the registry goes: the running loop is asked to close its client
        deadline = time.monotonic() + 5
        while (tracked.alive() or server.stats.open_connections) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracked.alive() == []
        assert server.stats.open_connections == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _aclose_before_the_trio_keeper_runs(server: MockOpenAIServer) -> None:
    import trio

    tracked = TrackedClients(server)
    client = AsyncResilientClient(openai_factory=tracked, retry=None, deadline=20)
    built, resume = threading.Event(), threading.Event()
    closed_in_time: list[bool] = []

    async def trio_side() -> None:
        _ = client.openai  # builds the client and spawns its keeper, which has not run yet
        built.set()
        resume.wait(10)  # block this loop: the close request is queued meanwhile
        with trio.move_on_after(5):
            while len(client._clients):  # noqa: ASYNC110 - the registry has no event to await
                await trio.sleep(0.01)
        closed_in_time.append(not len(client._clients))

    other = threading.Thread(target=trio.run, args=(trio_side,))
    other.start()
    assert built.wait(10)
    anyio.run(client.aclose)  # from another loop: asks the trio loop to close its client
    resume.set()
    other.join()
    assert closed_in_time == [True]
    assert tracked.alive() == []


def test_aclose_from_another_thread_before_the_trio_keeper_has_started(
    server: MockOpenAIServer,
) -> None:
    pytest.importorskip("trio")
    for _ in range(10):  # trio runs a batch of tasks in random order: try both orders
        _aclose_before_the_trio_keeper_runs(server)


# -- fork (issue 12 row 6) ---------------------------------------------------------------------


def test_fork_while_another_thread_holds_every_registry_lock() -> None:
    result = _run_script("-W", "error", str(SCRIPTS / "fork_with_held_locks.py"), timeout=90)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "child ok"


def _in_child(work: Callable[[], None], timeout: float = 20) -> None:
    """Run ``work`` in a forked child; fail if it raises, or hangs past ``timeout``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child hung for {timeout} s")
        time.sleep(0.02)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_pool_and_never_touches_the_inherited_one() -> None:
    builds: list[int] = []
    closed: list[ThreadPoolExecutor] = []

    def build() -> ThreadPoolExecutor:
        builds.append(os.getpid())
        return ThreadPoolExecutor(2)

    pools = PerProcess(build)
    parent_pool = pools.get()
    assert parent_pool.submit(os.getpid).result(5) == os.getpid()  # its workers are running

    def child() -> None:
        pool = pools.get()
        assert pool is not parent_pool
        assert builds == [os.getppid(), os.getpid()]
        # The inherited pool's workers do not exist here: using it would hang; this one works.
        assert pool.submit(os.getpid).result(5) == os.getpid()
        pools.close(closed.append)
        assert closed == [pool]

    _in_child(child)
    assert pools.get() is parent_pool  # the parent's pool is untouched
    pools.close(lambda pool: pool.shutdown(wait=True))
    assert builds == [os.getpid()]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_closes_what_it_inherited() -> None:
    closed: list[object] = []
    holder = PerProcess(object)
    inherited = holder.get()

    def child() -> None:
        holder.close(closed.append)  # nothing built in this process yet: nothing to close
        assert closed == []
        with pytest.raises(ClientClosedError):
            holder.get()

    _in_child(child)
    assert holder.get() is inherited


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_async_child_dials_its_own_connection_while_the_parent_loop_runs(
    server: MockOpenAIServer,
) -> None:
    client = make_async(server)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        asyncio.run_coroutine_threadsafe(client.embed("parent"), loop).result(10)
        assert server.stats.connections_opened == 1

        def child() -> None:
            assert asyncio.run(client.embed("child"))

        _in_child(child)
        assert server.stats.connections_opened == 2  # the child dialled its own
        asyncio.run_coroutine_threadsafe(client.embed("parent again"), loop).result(10)
        assert server.stats.connections_opened == 2  # the parent's connection is intact
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
    assert server.stats.total_requests == 3


# -- PerProcess ----------------------------------------------------------------------------------


def test_per_process_builds_one_object_for_many_threads() -> None:
    builds: list[object] = []
    barrier = threading.Barrier(16)

    def build() -> object:
        time.sleep(0.01)  # widen the window in which a second build could start
        made = object()
        builds.append(made)
        return made

    holder = PerProcess(build)

    def work(_: int) -> object:
        barrier.wait()
        return holder.get()

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(work, range(16)))
    assert len(builds) == 1
    assert all(item is builds[0] for item in got)


def test_per_process_close_hands_its_object_to_the_closer_once() -> None:
    closed: list[list[int]] = []
    holder = PerProcess(lambda: [1])
    made = holder.get()
    holder.close(closed.append)
    assert closed == [made]
    assert closed[0] is made
    assert holder.closed
    holder.close(closed.append)  # already closed: nothing more to hand over
    assert len(closed) == 1
    with pytest.raises(ClientClosedError):
        holder.get()


def test_per_process_close_before_first_use_builds_nothing() -> None:
    builds: list[int] = []
    holder = PerProcess(lambda: builds.append(1))
    holder.close(lambda _: pytest.fail("nothing was built"))
    assert builds == []


def test_per_process_passes_errors_through() -> None:
    def fail() -> object:
        raise OSError("no threads left")

    holder = PerProcess(fail)
    with pytest.raises(OSError, match="no threads left"):
        holder.get()

    def refuse(_: object) -> None:
        raise RuntimeError("closer failed")

    working = PerProcess(object)
    working.get()
    with pytest.raises(RuntimeError, match="closer failed"):
        working.close(refuse)
    assert working.closed


def test_per_process_needs_a_callable_factory() -> None:
    with pytest.raises(TypeError, match="callable factory, got int"):
        PerProcess(3)  # type: ignore[arg-type]
