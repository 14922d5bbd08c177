"""Shared helpers of the reliability suite: clients, resource counts, accounting checks, servers.

Resource counts are what the leak checks compare before and after each scenario:

- sockets: the ``socket:`` entries of ``/proc/self/fd`` (this process only; an in-process
  ``MockOpenAIServer`` counts too, so checks run after it has stopped);
- threads: every live thread except the worker pools that event loops own and reuse
  (``asyncio_*`` of the default executor, anyio's and trio's worker-thread caches): those are
  bounded by their runtime and linger a few seconds by design, so they are reported, not asserted;
- tasks: asyncio tasks, or every task of the trio task tree, of the running loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import sniffio

import resilient_llm
from resilient_llm import (
    AsyncResilientClient,
    BatchResult,
    ResilientClient,
    RetryPolicy,
)
from resilient_llm.testing import MockOpenAIServer, embedding_vector

from ..conftest import TEST_KEY

__all__ = [
    "FAST_RETRY",
    "HAS_PROC",
    "InvalidResponse",
    "RUNTIME_THREAD_PREFIXES",
    "GarbageServer",
    "RemoteServer",
    "Resources",
    "assert_accounted_once",
    "assert_vector",
    "async_client",
    "background",
    "closed_port",
    "count_tasks",
    "error_chain_text",
    "open_sockets",
    "resources",
    "server_answered",
    "server_sent",
    "settle_resources",
    "settle_resources_async",
    "settle_tasks",
    "sync_client",
]

HAS_PROC = os.path.isdir("/proc/self/fd")


def _public_error(name: str) -> type[Exception]:
    """A public exception of SPEC §6, or a stand-in nothing raises while it does not exist yet
    (so the tests that need it fail on their own assertions, not at import)."""
    found = getattr(resilient_llm, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return type(name, (Exception,), {"__doc__": f"stand-in: resilient_llm.{name} is missing"})


InvalidResponse = _public_error("InvalidResponse")

# Quick back-off: scenarios test decisions, not patience.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)

RUNTIME_THREAD_PREFIXES = ("asyncio_", "AnyIO worker thread", "Trio thread")


def sync_client(base_url: str, **kwargs: Any) -> ResilientClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("deadline", 20)
    kwargs.setdefault("api_key", TEST_KEY)
    return ResilientClient(base_url=base_url, **kwargs)


def async_client(base_url: str, **kwargs: Any) -> AsyncResilientClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("deadline", 20)
    kwargs.setdefault("api_key", TEST_KEY)
    return AsyncResilientClient(base_url=base_url, **kwargs)


# -- resources ---------------------------------------------------------------------------------


def open_sockets() -> int:
    if not HAS_PROC:
        return 0
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # the descriptor of listdir itself, or one closed meanwhile
    return count


def _is_runtime_thread(thread: threading.Thread) -> bool:
    return thread.name.startswith(RUNTIME_THREAD_PREFIXES)


@dataclass(frozen=True)
class Resources:
    """What a scenario may leak: threads (runtime worker pools excluded) and sockets."""

    threads: int
    sockets: int
    runtime_threads: int = 0

    def exceeds(self, baseline: Resources) -> bool:
        return self.threads > baseline.threads or self.sockets > baseline.sockets

    def describe(self) -> str:
        return f"{self.threads} threads, {self.sockets} sockets"


def resources() -> Resources:
    threads = threading.enumerate()
    runtime = sum(1 for t in threads if _is_runtime_thread(t))
    return Resources(len(threads) - runtime, open_sockets(), runtime)


def settle_resources(baseline: Resources, timeout: float = 3.0) -> Resources:
    """Wait (a bounded while) for threads and sockets to come back to ``baseline``.

    Peers close their side of a connection, and pool threads exit, a moment after ``close()``.
    """
    end = time.monotonic() + timeout
    now = resources()
    while now.exceeds(baseline) and time.monotonic() < end:
        time.sleep(0.02)
        now = resources()
    return now


async def settle_resources_async(baseline: Resources, within: float = 3.0) -> Resources:
    """`settle_resources` for async code: the loop must run to finish closing transports."""
    end = time.monotonic() + within
    now = resources()
    while now.exceeds(baseline) and time.monotonic() < end:
        await anyio.sleep(0.02)
        now = resources()
    return now


def count_tasks() -> int:
    """Tasks of the running event loop (asyncio), or of the whole trio task tree."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        count = 0
        stack = [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            count += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return count
    return len(asyncio.all_tasks())


async def settle_tasks(baseline: int, within: float = 3.0) -> int:
    end = time.monotonic() + within
    now = count_tasks()
    while now > baseline and time.monotonic() < end:
        await anyio.sleep(0.01)
        now = count_tasks()
    return now


# -- accounting --------------------------------------------------------------------------------


# Faults after which the server still computes the answer itself (it is only late or slow).
SERVER_ANSWERED = (None, "latency", "drip")


def server_answered(server: MockOpenAIServer, path: str = "/v1/embeddings") -> set[str]:
    """Input texts of the requests to `path` that the server answered itself with a 200.

    Needs a server made with ``record_texts=True`` (the suite's ``server`` fixture is).
    """
    records = [r for r in server.requests if r.path == path]
    assert all(r.texts is not None for r in records), "the server does not record texts"
    return {
        text
        for record in records
        if record.status == 200 and record.fault in SERVER_ANSWERED
        for text in record.texts or ()
    }


def server_sent(server: MockOpenAIServer, path: str = "/v1/embeddings") -> set[str]:
    """Input texts of every request to `path` that reached the server, whatever the answer."""
    return {text for r in server.requests if r.path == path for text in r.texts or ()}


def assert_accounted_once(
    result: BatchResult[Any],
    inputs: Sequence[object],
    *,
    value_of: Callable[[int], object] | None = None,
    server: MockOpenAIServer | None = None,
    path: str = "/v1/embeddings",
) -> None:
    """Every input is a value or a failure record, exactly once.

    Checked against the input list and, with `server`, against the server's request log;
    never against the library's own ``succeeded()``. ``values[i]`` must be ``None`` exactly
    where ``i`` failed (the suite's batches never produce a legitimate ``None``), equal to
    ``value_of(i)`` where given; a text that succeeded must have been answered 200 by the
    server itself (a canned answer is not a result), and a failure with ``attempts == 0``
    must never have reached it. The library's counters must then agree with these counts.
    """
    total = len(inputs)
    assert len(result.values) == total, f"{len(result.values)} values for {total} inputs"
    failed = [failure.index for failure in result.failures]
    assert len(failed) == len(set(failed)), "an index failed twice"
    failed_set = set(failed)
    assert failed_set <= set(range(total)), f"failures outside the input: {failed_set}"
    both = [i for i in failed_set if result.values[i] is not None]
    assert not both, f"indices both failed and have a value: {both[:10]}"
    neither = [i for i in range(total) if i not in failed_set and result.values[i] is None]
    assert not neither, f"indices with neither a value nor a failure: {neither[:10]}"
    if value_of is not None:
        wrong = [
            i
            for i in range(total)
            if i not in failed_set and not _same(result.values[i], value_of(i))
        ]
        assert not wrong, f"{len(wrong)} wrong values, first indices {wrong[:10]}"
    if server is not None:
        answered = server_answered(server, path)
        unanswered = [
            i
            for i in range(total)
            if i not in failed_set and isinstance(inputs[i], str) and inputs[i] not in answered
        ]
        assert not unanswered, f"values for texts the server never answered: {unanswered[:10]}"
        sent = server_sent(server, path)
        claimed_unsent = [
            f.index
            for f in result.failures
            if f.attempts == 0 and isinstance(inputs[f.index], str) and inputs[f.index] in sent
        ]
        assert not claimed_unsent, f"failures with attempts=0 that were sent: {claimed_unsent}"
    # Only now the library's own counters: they must agree with what was counted above.
    stats = result.stats
    assert (stats.total, stats.succeeded, stats.failed) == (
        total,
        total - len(failed_set),
        len(failed_set),
    ), stats


def _same(value: object, expected: object) -> bool:
    if isinstance(expected, list) and expected and isinstance(expected[0], float):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(
                isinstance(a, float) and abs(a - b) < 1e-6
                for a, b in zip(value, expected, strict=True)
            )
        )
    return value == expected


def assert_vector(vector: Any, text: str, dims: int) -> None:
    expected = embedding_vector(text, dims)
    assert len(vector) == dims
    assert all(abs(a - b) < 1e-6 for a, b in zip(vector, expected, strict=True)), text


def error_chain_text(exc: BaseException) -> str:
    """The whole printed traceback: message, notes and every chained cause."""
    return "".join(traceback.format_exception(exc))


# -- servers that are not MockOpenAIServer -----------------------------------------------------


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read_request(conn: socket.socket) -> None:
    """Read one HTTP request (headers and a `Content-Length` body) off `conn`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class GarbageServer:
    """A TCP server that answers every connection with bytes that are not HTTP, then closes."""

    REPLY = b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe\x00 not http at all\r\n"

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="garbage-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    _read_request(conn)
                    conn.sendall(self.REPLY)
                    # Closing with request bytes still unread would send a reset instead of
                    # the reply, and the client would see a bare read error, not bad bytes.
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass

    def __enter__(self) -> GarbageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


_REMOTE_SERVER = Path(__file__).with_name("_server_process.py")


class RemoteServer:
    """A `MockOpenAIServer` in a child process, so that load tests measure the client alone.

    The child prints its base URL, serves until its stdin closes, then prints its counters
    as JSON (read into :attr:`stats`).
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.stats: dict[str, Any] = {}

    def __enter__(self) -> RemoteServer:
        self._process = subprocess.Popen(
            [sys.executable, str(_REMOTE_SERVER), json.dumps(self._options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self._process.kill()
            self._process.wait(10)
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()
            raise RuntimeError(f"the server process did not start (said {self.base_url!r})")
        return self

    def __exit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            process.stdin.close()
            line = process.stdout.readline()
            process.wait(30)
            self.stats = json.loads(line) if line.strip() else {}
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            process.stdout.close()


@contextmanager
def background(target: Callable[[], None], name: str) -> Iterator[threading.Thread]:
    """Run ``target`` in a thread for the duration of the block, and join it at the end."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(30)
    assert not thread.is_alive(), f"{name} did not finish"
    if errors:
        raise errors[0]
