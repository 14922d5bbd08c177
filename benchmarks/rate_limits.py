"""Shared rate limits: what N worker processes achieve of one budget, through a file or Redis.

Each worker process sends embeddings requests one after another through a plain
``openai.OpenAI`` client, asking the shared limiter before each one. The loopback server runs in
a process of its own and enforces the budget itself (a sliding window; 429 above it), so the
figures come from its request log: requests it admitted per window, against the budget.

    python -m benchmarks.rate_limits [--rpm 1200] [--window 10] [--windows 2] [--redis URL] [--save]

With no ``--redis``, a ``redis-server`` on a free port is started when one is installed. The
ceiling is ``window / (window + slack)`` of the budget (the limiter's slack is a twentieth of
the window, at most 1 s): 95.2% for a 10 s window, 98.4% for 60 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks._common import save_report

PROCESS_COUNTS = (1, 4, 8)
MODEL = "text-embedding-3-small"
TEXT = "The quick brown fox jumps over the lazy dog."


# ---------------------------------------------------------------- the server's process


def _serve(conn: multiprocessing.connection.Connection, rpm: int, window: float) -> None:
    """Run the rate-limited server and an unlimited one for warm-ups; send the log at the end."""
    from resilient_llm.testing import MockOpenAIServer

    limited = MockOpenAIServer(rpm=rpm, rate_window=window, poison_marker=None).start()
    spare = MockOpenAIServer(poison_marker=None).start()
    try:
        conn.send((limited.base_url, spare.base_url))
        conn.recv()  # the run is over
        admitted = sorted(r.started for r in limited.requests if r.status == 200)
        refused = sum(1 for r in limited.requests if r.status == 429)
        conn.send((admitted, refused, limited.max_requests_in_window(window, status=200)))
    finally:
        limited.stop()
        spare.stop()


# ---------------------------------------------------------------- a worker process


@dataclass(frozen=True)
class Job:
    backend: str
    where: str
    key: str
    rpm: float
    window: float
    base_url: str
    warm_url: str
    seconds: float


def _limiter(job: Job) -> Any:
    from resilient_llm import FileRateLimiter, RedisRateLimiter

    settings = {"requests_per_minute": job.rpm, "window": job.window}
    if job.backend == "file":
        return FileRateLimiter(job.where, **settings)
    return RedisRateLimiter(job.where, key=job.key, **settings)


def _work(job: Job, ready: Any, go: Any, results: Any) -> None:
    import openai

    limiter = _limiter(job)
    client = openai.OpenAI(max_retries=0, base_url=job.base_url, api_key="sk-bench")
    warm = openai.OpenAI(max_retries=0, base_url=job.warm_url, api_key="sk-bench")
    warm.embeddings.create(model=MODEL, input=TEXT)  # imports and builds the SDK's types
    limiter.reserve(0)  # opens the file, loads the Lua script (books one slot before the start)
    ready.put(os.getpid())
    go.wait()
    booking: list[float] = []
    limited = 0
    stop = time.monotonic() + job.seconds
    while time.monotonic() < stop:
        started = time.perf_counter()
        wait = limiter.reserve()
        booking.append(time.perf_counter() - started)
        time.sleep(wait)
        try:
            client.embeddings.create(model=MODEL, input=TEXT)
        except openai.RateLimitError:
            limited += 1
    results.put((booking, limited))


# ---------------------------------------------------------------- the parent


@dataclass
class Row:
    backend: str
    processes: int
    admitted: int
    achieved: float
    busiest: float
    refused: int
    booking_p50_us: float
    booking_p99_us: float


def measure(backend: str, where: str, processes: int, args: argparse.Namespace) -> Row:
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a process that has imported everything once: starting eight of them
    # costs milliseconds, not eight interpreters' imports.
    context.set_forkserver_preload(["openai", "resilient_llm", "resilient_llm.testing._server"])
    budget = round(args.rpm * args.window / 60)
    parent, child = context.Pipe()
    server = context.Process(target=_serve, args=(child, budget, args.window), daemon=True)
    server.start()
    base_url, warm_url = parent.recv()
    seconds = args.windows * args.window + 0.5
    job = Job(
        backend,
        where,
        f"bench:{uuid.uuid4().hex}",
        args.rpm,
        args.window,
        base_url,
        warm_url,
        seconds,
    )
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    workers = [
        context.Process(target=_work, args=(job, ready, go, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    # The warm-up bookings are in the past by now: let them leave the buckets and the window.
    time.sleep(args.window / 20 + 0.2)
    go.set()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    parent.send("log")
    times, refused, busiest = parent.recv()
    server.join()
    span = args.windows * args.window
    admitted = sum(1 for t in times if t < times[0] + span)
    bookings = sorted(b for booking, _ in outcomes for b in booking)
    return Row(
        backend=backend,
        processes=processes,
        admitted=admitted,
        achieved=admitted / (budget * args.windows),
        busiest=busiest / budget,
        refused=refused,
        booking_p50_us=statistics.median(bookings) * 1e6,
        booking_p99_us=bookings[int(len(bookings) * 0.99)] * 1e6,
    )


def _start_redis() -> tuple[str, subprocess.Popen[bytes]] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tempfile.gettempdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


def table(rows: list[Row], args: argparse.Namespace) -> str:
    budget = round(args.rpm * args.window / 60)
    ceiling = args.window / (args.window + min(args.window / 20, 1.0))
    lines = [
        f"Budget: {args.rpm:g} requests/minute counted over {args.window:g} s windows "
        f"({budget} per window), {args.windows} windows per run; ceiling {ceiling:.1%}.",
        "",
        "| limiter | processes | admitted | achieved / budget | busiest window / budget "
        "| 429s | reserve() p50 | p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.backend} | {row.processes} | {row.admitted} | {row.achieved:.1%} "
            f"| {row.busiest:.0%} | {row.refused} | {row.booking_p50_us:.0f} us "
            f"| {row.booking_p99_us:.0f} us |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=float, default=1200.0, help="the shared budget per minute")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--windows", type=int, default=2, help="windows measured per run")
    parser.add_argument("--redis", help="a redis:// URL (default: start a redis-server)")
    parser.add_argument("--processes", type=int, nargs="*", default=list(PROCESS_COUNTS))
    parser.add_argument(
        "--save",
        action="store_true",
        help="keep the report in benchmarks/results/ for BENCHMARKS.md (python -m benchmarks)",
    )
    args = parser.parse_args(argv)

    started_redis = None
    redis_url = args.redis
    if redis_url is None:
        started_redis = _start_redis()
        redis_url = started_redis[0] if started_redis else None
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as directory:
            for processes in args.processes:
                path = os.path.join(directory, f"budget-{processes}.sqlite")
                rows.append(measure("file", path, processes, args))
                print(table(rows, args).splitlines()[-1], file=sys.stderr)
            if redis_url is None:
                print("redis-server not found: Redis rows skipped", file=sys.stderr)
            else:
                for processes in args.processes:
                    rows.append(measure("redis", redis_url, processes, args))
                    print(table(rows, args).splitlines()[-1], file=sys.stderr)
    finally:
        if started_redis is not None:
            started_redis[1].terminate()
            started_redis[1].wait()
    report = "\n".join(
        [
            "## Shared rate limits: N processes on one budget",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs. "
            + table(rows, args),
        ]
    )
    print(report)
    if args.save:
        save_report("rate_limits", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
