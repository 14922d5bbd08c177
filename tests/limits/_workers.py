"""What runs in the worker processes of the limiter tests (imported by each child).

`make_sender` is the one place a worker talks to the server: today a plain ``openai.OpenAI``
that asks the limiter before each request; once the facades take ``rate_limiter=``, its last
line becomes ``ResilientClient(..., rate_limiter=limiter).embed`` and nothing else changes.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import random
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EMBEDDING_MODEL = "text-embedding-3-small"


def process_context() -> multiprocessing.context.BaseContext:
    """Children forked from a clean, warmed-up server process (see `_preload`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__.rsplit(".", 1)[0] + "._preload"])
    return context


def tokens_of(text: str) -> int:
    """What the loopback server bills for a text (four characters a token)."""
    from resilient_llm.testing._request import estimate_tokens

    return estimate_tokens(text)


def text_of(process: int, tokens: int) -> str:
    """A text the server bills exactly `tokens` tokens for, marked with its process."""
    head = f"p{process} "
    return head + "x" * (4 * tokens - len(head))


def process_of(text: str) -> int:
    return int(text.split(" ", 1)[0][1:])


@dataclass(frozen=True)
class Job:
    """One worker process: where its budget lives, where it sends, and for how long."""

    index: int
    backend: str  # "file" or "redis"
    where: str  # the budget file, or the Redis URL
    settings: dict[str, float]
    base_url: str
    duration: float
    key: str = "resilient_llm:rate"
    tokens: tuple[int, int] = (1, 1)  # each request's tokens: random in this range
    extra: dict[str, Any] = field(default_factory=dict)


def build_limiter(job: Job) -> Any:
    if job.backend == "file":
        from resilient_llm import FileRateLimiter

        return FileRateLimiter(job.where, **job.settings)
    from resilient_llm import RedisRateLimiter

    return RedisRateLimiter(job.where, key=job.key, **job.settings)


def make_sender(limiter: Any, base_url: str) -> Callable[[str], object]:
    """Send one embeddings request for `text` through the library's client, paced by `limiter`
    (the client books each attempt and pauses every sharer on a 429's Retry-After)."""
    from resilient_llm import ResilientClient, RetryPolicy

    client = ResilientClient(
        base_url=base_url,
        api_key="sk-test",
        embedding_model=EMBEDDING_MODEL,
        rate_limiter=limiter,
        retry=RetryPolicy(max_attempts=1),  # a 429 must show, not be retried away
    )
    return client.embed


def warm_up() -> None:
    """One request to a server of this process's own, before the run.

    The first embeddings call of a process imports and builds the SDK's response types (most
    of a second on a busy machine); four processes doing that in the first second of the run
    would leave the budget unused, and a request to the test's server would count in its window.
    """
    from resilient_llm import LocalRateLimiter
    from resilient_llm.testing import MockOpenAIServer

    with MockOpenAIServer() as private:
        make_sender(LocalRateLimiter(), private.base_url)(text_of(0, 4))


def run(job: Job, ready: Any, go: Any, results: Any) -> None:
    """A worker: build the limiter and the sender, wait for the start, send until time's up."""
    import openai

    outcome: dict[str, Any] = {"index": job.index, "pid": os.getpid(), "sent": 0, "limited": 0}
    try:
        send = make_sender(build_limiter(job), job.base_url)
        rng = random.Random(job.index)
        ready.put(job.index)
        if not go.wait(60):
            raise TimeoutError("never told to start")
        stop = time.monotonic() + job.duration
        while time.monotonic() < stop:
            try:
                send(text_of(job.index, rng.randint(*job.tokens)))
                outcome["sent"] += 1
            except openai.RateLimitError:
                outcome["limited"] += 1
                # The pause is stored before the error reaches us. CLOCK_MONOTONIC is one clock
                # for every process of the machine, so the test can compare it with the server's.
                outcome["limited_at"] = time.monotonic()
    except BaseException:
        outcome["error"] = traceback.format_exc()
    results.put(outcome)


# ---------------------------------------------------------------- file limiter workers


def book_at_frozen_clock(
    path: str, settings: dict[str, float], n: int, ready: Any, go: Any, results: Any
) -> None:
    """Open the file (maybe a fresh one, together with others), book `n` times at clock 0."""
    try:
        from resilient_llm import FileRateLimiter

        go.wait(60)
        limiter = FileRateLimiter(path, **settings)
        # A slow clock read between the booking's read and its write: processes overlap there.
        limiter._clock = lambda: (time.sleep(0.001), 1_700_000_000.0)[1]
        waits = [limiter.reserve() for _ in range(n)]
        results.put(waits)
    except BaseException:
        results.put(traceback.format_exc())


def die_holding_the_lock(path: str, locked: Any) -> None:
    """Enter the limiter's write transaction, say so, and wait there to be killed."""
    from resilient_llm import FileRateLimiter

    limiter = FileRateLimiter(path, requests_per_minute=600)

    def hold(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE budget SET requests = requests")
        locked.set()
        time.sleep(120)

    limiter._transaction(hold)
