"""Start, stop, restart: nothing may be left behind, even with requests hanging."""

from __future__ import annotations

import gc
import os
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable

import openai
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer

ClientFactory = Callable[..., openai.OpenAI]
HANG_REQUEST = (
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 33\r\n\r\n{"input": "x", "model": "m-test"}'
)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count sockets")
def test_exit_while_requests_hang_leaves_nothing_behind() -> None:
    gc.collect()
    threads_before = threading.active_count()
    fds_before = _open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server = MockOpenAIServer(latency=0.0)
        server.start()
        server.script(*[Fault.hang()] * 4)
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for sock in clients[:4]:
            sock.sendall(HANG_REQUEST)
        # The fifth connection stays idle: keep-alive connections must go too.
        deadline = time.monotonic() + 2
        while server.stats.in_flight < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats.in_flight == 4
        port = server.port

        began = time.perf_counter()
        server.__exit__(None, None, None)
        assert time.perf_counter() - began < 1.0

        # Every client sees its connection closed by the server.
        for sock in clients:
            sock.settimeout(2)
            assert sock.recv(100) == b""
            sock.close()
        assert _refuses(port)
        assert threading.active_count() == threads_before
        gc.collect()
        assert _open_fds() == fds_before
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    stats = server.stats
    assert (stats.in_flight, stats.open_connections) == (0, 0)
    assert stats.faults_injected == {"hang": 4}
    assert [r.status for r in server.requests] == [None] * 4


def test_restart_binds_the_same_port(
    make_client: ClientFactory, mock_openai: MockOpenAIServer
) -> None:
    port = mock_openai.port
    with make_client(mock_openai) as client:
        assert client.models.list().data
        mock_openai.stop()
        assert not mock_openai.running
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        mock_openai.start()
        assert mock_openai.port == port
        assert client.models.list().data  # the pooled connection died; a new one works
    assert mock_openai.stats.total_requests == 2  # counters survive a restart
    assert mock_openai.stats.connections_opened == 2


def test_stop_is_idempotent_and_start_twice_fails() -> None:
    server = MockOpenAIServer()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.base_url
    assert "unbound" in repr(server)
    server.stop()  # never started: nothing to do
    with server:
        assert server.running
        assert repr(server) == f"<MockOpenAIServer {server.url} running=True>"
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    server.stop()
    assert not server.running


def test_start_is_fast() -> None:
    MockOpenAIServer().start().stop()  # first start pays for imports
    timings = []
    for _ in range(10):
        server = MockOpenAIServer()
        began = time.perf_counter()
        server.start()
        timings.append(time.perf_counter() - began)
        server.stop()
    # No readiness polling or sleep: start returns as soon as the socket listens. The fastest
    # start shows that; the median allows for a CPU shared with other test runs.
    assert min(timings) < 0.02, timings
    assert statistics.median(timings) < 0.1, timings


def test_bind_failure_leaves_nothing_open() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        server = MockOpenAIServer(port=blocker.getsockname()[1])
        with pytest.raises(OSError):  # noqa: PT011 -- EADDRINUSE, spelled differently per OS
            server.start()
        assert not server.running


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        MockOpenAIServer(latency=-1)
    with pytest.raises(ValueError, match="latency range"):
        MockOpenAIServer(latency=(0.2, 0.1))
    with pytest.raises(ValueError, match="poison_marker"):
        MockOpenAIServer(poison_marker="")
    with pytest.raises(TypeError, match="expected Fault"):
        MockOpenAIServer().script("429")  # type: ignore[arg-type]


def test_malformed_http_gets_400_and_a_close(mock_openai: MockOpenAIServer) -> None:
    with socket.create_connection(("127.0.0.1", mock_openai.port), timeout=2) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data


def test_pipelined_requests_are_answered_in_order(mock_openai: MockOpenAIServer) -> None:
    requests = b"".join(
        f"GET /v1/models/m{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)
    )
    with socket.create_connection(("127.0.0.1", mock_openai.port), timeout=2) as sock:
        sock.sendall(
            requests + b"GET /v1/models/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 6
    order = [data.index(f'"id": "m{i}"'.encode()) for i in range(5)]
    assert order == sorted(order)
    assert data.rstrip().endswith(b'"owned_by": "user"}')
    assert mock_openai.stats.connections_opened == 1
