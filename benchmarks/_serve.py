"""The loopback server in a process of its own, steered over a small control socket.

The server's CPU must not share the measured client's GIL, so it runs here, in a separate
process: ``python -m benchmarks._serve`` prints a control port, and a client (`ServerControl`)
sends JSON lines to it: ``configure`` (a fresh `MockOpenAIServer` with the given latency and
seeded faults, so every timed run gets its own counters and fault sequence), ``stats``,
and ``prewarm``. Each control connection owns its own server, so the smoke run can run several
benchmark processes at once. The process exits when its stdin closes, that is when the runner
stops it or dies.

The kit's server caches the vector of the last 8,192 texts; a 20,000-text batch would miss that
cache on every input and measure the server's vector generation (~90 us a text) instead of the
clients. This process enlarges the cache and fills it with the benchmark texts before any run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

from benchmarks._common import FAULT_KINDS, FAULT_RETRY_AFTER, ROOT, text


class _State:
    def __init__(self) -> None:
        self.server: Any = None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "configure":
            return self._configure(request)
        if op == "stats":
            snapshot = self.server.stats.snapshot()
            data = {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
            data["responses_by_status"] = {
                str(k): v for k, v in data["responses_by_status"].items()
            }
            return data
        if op == "timeline":
            return {"requests": [[r.started, r.duration, r.status] for r in self.server.requests]}
        if op == "prewarm":
            from resilient_llm.testing import _api

            for i in range(request["n"]):
                _api._embedding_json(text(i), request["dimensions"], True)
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    def _configure(self, request: dict[str, Any]) -> dict[str, Any]:
        from resilient_llm.testing import Fault, MockOpenAIServer

        self.stop()
        faults = {
            "500": Fault.status(500),
            "429": Fault.status(429, retry_after=FAULT_RETRY_AFTER),
        }
        fail_rate = float(request.get("fail_rate", 0.0))
        self.server = MockOpenAIServer(
            latency=float(request.get("latency", 0.0)),
            fail_rate=fail_rate,
            random_faults=[faults[kind] for kind in FAULT_KINDS] if fail_rate else None,
            seed=request.get("seed"),
            poison_marker=None,
        ).start()
        return {"base_url": self.server.base_url}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _enlarge_vector_cache() -> None:
    from resilient_llm.testing import _api

    original = _api._embedding_json.__wrapped__
    _api._embedding_json = functools.lru_cache(maxsize=None)(original)


def _session(conn: socket.socket) -> None:
    """One control connection owns one server at a time; closing the connection stops it."""
    state = _State()
    try:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                request = json.loads(line)
                try:
                    reply = state.handle(request)
                except Exception as exc:
                    reply = {"error": repr(exc)}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()
    except OSError:
        pass
    finally:
        state.stop()


def _exit_with_parent() -> None:
    # The parent holds our stdin open; when it dies, however it dies, this process goes too.
    sys.stdin.read()
    os._exit(0)


def serve() -> None:
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    listener = socket.create_server(("127.0.0.1", 0))
    # The port first: benchmark processes start importing while this one imports the server.
    print(listener.getsockname()[1], flush=True)
    _enlarge_vector_cache()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_session, args=(conn,), daemon=True).start()


class ServerControl:
    """The client side of the control socket (one per benchmark process)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._stream = self._sock.makefile("rwb")

    def _ask(self, **request: Any) -> dict[str, Any]:
        self._stream.write(json.dumps(request).encode() + b"\n")
        self._stream.flush()
        reply: dict[str, Any] = json.loads(self._stream.readline())
        if "error" in reply:
            raise RuntimeError(f"benchmark server: {reply['error']}")
        return reply

    def configure(
        self, *, latency: float = 0.0, fail_rate: float = 0.0, seed: int | None = None
    ) -> str:
        """Start a fresh server (new counters, new fault sequence); return its base URL."""
        base_url: str = self._ask(op="configure", latency=latency, fail_rate=fail_rate, seed=seed)[
            "base_url"
        ]
        return base_url

    def stats(self) -> dict[str, Any]:
        return self._ask(op="stats")

    def timeline(self) -> list[tuple[float, float, int | None]]:
        """``(started, duration, status)`` of every request the current server received."""
        return [tuple(r) for r in self._ask(op="timeline")["requests"]]  # type: ignore[misc]

    def prewarm(self, n: int, dimensions: int) -> None:
        self._ask(op="prewarm", n=n, dimensions=dimensions)

    def close(self) -> None:
        self._stream.close()
        self._sock.close()


class ServerProcess:
    """Start ``python -m benchmarks._serve``; ``port`` is its control port."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip():
            self._process.kill()
            raise RuntimeError("the benchmark server did not start")
        self.port = int(line)

    def stop(self) -> None:
        """Close its stdin (it exits on that) and reap it."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()


if __name__ == "__main__":
    serve()
