"""Throughput of the testing kit's loopback server on small embedding requests.

Each client keeps one keep-alive connection and sends a fixed, pre-encoded request (one short
text, 256 dimensions, base64) as fast as the answers come back. The clients run in a separate
process by default, so that the figure measures the server and not the two sharing one GIL.

    python benchmarks/server_throughput.py [--seconds 5] [--clients 8] [--in-process] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import pstats
import socket
import statistics
import threading
import time

from resilient_llm.testing import MockOpenAIServer

BODY = json.dumps(
    {
        "input": "The quick brown fox jumps over the lazy dog.",
        "model": "text-embedding-3-small",
        "dimensions": 256,
        "encoding_format": "base64",
    }
).encode()


def _request(port: int) -> bytes:
    return (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


def _read_response(sock: socket.socket, buffer: bytearray) -> None:
    """Read exactly one Content-Length framed response (the server sends no other kind here)."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[: end + 2]).lower()
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"unexpected response: {head[:80]!r}")
            start = head.index(b"content-length:") + len(b"content-length:")
            length = int(head[start : head.index(b"\r\n", start)])
            total = end + 4 + length
            if len(buffer) >= total:
                del buffer[:total]
                return
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed the connection")
        buffer += chunk


def _client(port: int, stop_at: float, latencies: list[float]) -> None:
    request = _request(port)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            sock.sendall(request)
            _read_response(sock, buffer)
            latencies.append(time.perf_counter() - sent)


def _load(port: int, clients: int, seconds: float) -> tuple[list[float], float]:
    """Run `clients` threads for `seconds`; return every request latency and the elapsed time."""
    began = time.perf_counter()
    stop_at = began + seconds
    per_thread: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(port, stop_at, lat)) for lat in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [x for lat in per_thread for x in lat], time.perf_counter() - began


def _load_in_child(port: int, clients: int, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(_load(port, clients, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--in-process", action="store_true", help="clients share the server's process"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the server thread")
    args = parser.parse_args()

    with MockOpenAIServer() as server:
        _load(server.port, 2, 0.3)  # warm up: imports, caches, connection setup
        server.reset_stats()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            # The server runs in its own thread; profile it there.
            server._portal.call(profiler.enable)  # type: ignore[union-attr]
        if args.in_process:
            latencies, elapsed = _load(server.port, args.clients, args.seconds)
        else:
            context = multiprocessing.get_context("spawn")
            queue: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
            child = context.Process(
                target=_load_in_child, args=(server.port, args.clients, args.seconds, queue)
            )
            child.start()
            latencies, elapsed = queue.get()
            child.join()
        if profiler is not None:
            server._portal.call(profiler.disable)  # type: ignore[union-attr]
        served = server.stats.responses_by_status.get(200, 0)

    latencies.sort()
    print(f"clients: {args.clients} ({'same process' if args.in_process else 'separate process'})")
    print(f"requests: {len(latencies)} in {elapsed:.2f} s (server counted {served})")
    print(f"throughput: {len(latencies) / elapsed:,.0f} req/s")
    print(
        f"latency: p50 {statistics.median(latencies) * 1e3:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
