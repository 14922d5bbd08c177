"""Where our time goes: cProfile over our batch (sync and async) and our per-call paths.

The sync batch runs on worker threads, and the async one plans in anyio's worker threads, so every
thread started during a run gets a profiler of its own, enabled and disabled in that thread, and
the profiles are merged.
The profilers count CPU time (``time.thread_time``), not wall time: with sixteen threads taking
turns on one GIL, wall time would charge every function for the time its thread spent waiting.
What is left in blocking calls (socket reads, locks, ``epoll``) is set apart as
waiting; the shares below are of the rest. cProfile's per-call cost inflates code that makes many
small calls, so read the shares as a ranking, not as exact fractions.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import pstats
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from benchmarks._common import API_KEY, CHAT_MESSAGES, SHORT_TEXT, Settings, texts

_WAITS = (
    "acquire",
    "recv",
    "recv_into",
    "poll",
    "select",
    "sleep",
    "wait",
    "connect",
    "accept",
    "control",  # epoll.control / kqueue
)

_GROUPS = (
    ("resilient_llm", f"{os.sep}resilient_llm{os.sep}"),
    ("openai", f"{os.sep}openai{os.sep}"),
    ("httpx", f"{os.sep}httpx"),
    ("httpcore", f"{os.sep}httpcore"),
    ("h11", f"{os.sep}h11{os.sep}"),
    ("anyio", f"{os.sep}anyio{os.sep}"),
    ("tenacity", f"{os.sep}tenacity{os.sep}"),
    ("pydantic", f"{os.sep}pydantic"),
    ("asyncio", f"{os.sep}asyncio{os.sep}"),
    ("json", f"{os.sep}json{os.sep}"),
    ("concurrent/threading", f"{os.sep}concurrent{os.sep}"),
    ("concurrent/threading", f"{os.sep}threading.py"),
)


def _is_wait(filename: str, name: str) -> bool:
    if filename != "~":
        return False
    return any(f"'{w}'" in name or f"{w}>" in name for w in _WAITS) or name in (
        "<built-in method time.sleep>",
        "<built-in method select.select>",
    )


def _group(filename: str, name: str) -> str:
    if filename == "~":
        if "json" in name or "scanner" in name:
            return "json"
        if "base64" in name or "binascii" in name or "array" in name:
            return "decode (base64/array)"
        return "builtins (C)"
    for group, marker in _GROUPS:
        if marker in filename:
            return group
    return "stdlib/other"


def _where(filename: str, line: int, name: str) -> str:
    marker = f"{os.sep}resilient_llm{os.sep}"
    short = filename.split(marker, 1)[-1] if marker in filename else os.path.basename(filename)
    return f"{short}:{name}"


def summarize(stats: pstats.Stats, wall: float, top: int = 10) -> dict[str, Any]:
    """Group self time by package and rank our own functions; shares are of non-waiting time."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    wait = 0.0
    busy = 0.0
    groups: dict[str, float] = {}
    ours_files: dict[str, float] = {}
    ours_self: list[tuple[float, str]] = []
    ours_cum: list[tuple[float, str]] = []
    for (filename, line, name), (_cc, _nc, tottime, cumtime, _callers) in raw.items():
        if _is_wait(filename, name):
            wait += tottime
            continue
        busy += tottime
        group = _group(filename, name)
        groups[group] = groups.get(group, 0.0) + tottime
        if group == "resilient_llm":
            where = _where(filename, line, name).split(":", 1)[0]
            ours_files[where] = ours_files.get(where, 0.0) + tottime
            ours_self.append((tottime, _where(filename, line, name)))
            ours_cum.append((cumtime, _where(filename, line, name)))
    busy = busy or 1e-9
    return {
        "wall": wall,
        "busy": busy,
        "wait": wait,
        "groups": sorted(((g, t / busy) for g, t in groups.items()), key=lambda x: -x[1]),
        "ours_files": sorted(((f, t / busy) for f, t in ours_files.items()), key=lambda x: -x[1]),
        "ours_self": [(w, t / busy) for t, w in sorted(ours_self, reverse=True)[:top]],
        "ours_cum": [(w, t / (busy + wait)) for t, w in sorted(ours_cum, reverse=True)[:top]],
    }


class _Snapshot:
    """Hands a profile's counts to `pstats.Stats` without disabling the profiler.

    `Profile.disable` closes the frames still open with the clock of the calling thread; for the
    profile of another thread (a worker still alive, idle in its queue) that mixes two threads'
    CPU clocks into nonsense. A snapshot leaves open frames out instead.
    """

    def __init__(self, profile: cProfile.Profile) -> None:
        self._profile = profile
        self.stats: dict[Any, Any] = {}

    def create_stats(self) -> None:
        self._profile.snapshot_stats()
        self.stats = self._profile.stats


class _Collections:
    """The garbage collector's passes while a profile runs: how many, and their wall time."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = time.perf_counter() - self._started
            self.count += 1
            self.seconds += took
            self.longest = max(self.longest, took)

    def summary(self) -> dict[str, float]:
        return {"collections": self.count, "seconds": self.seconds, "longest": self.longest}

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _profile_threads(fn: Callable[[], Any]) -> tuple[pstats.Stats, float]:
    """Profile ``fn()`` and every thread started meanwhile, each thread on its own CPU clock."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled_bootstrap(thread: threading.Thread) -> None:
        # Every kind of thread (pool workers, anyio's WorkerThread subclass) passes here, and
        # the profiler is enabled and disabled in the thread it measures.
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            bootstrap(thread)
        finally:
            profile.disable()

    main = cProfile.Profile(time.thread_time)
    threading.Thread._bootstrap_inner = profiled_bootstrap  # type: ignore[attr-defined]
    started = time.perf_counter()
    main.enable()
    try:
        fn()
    finally:
        main.disable()
        threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]
    wall = time.perf_counter() - started
    stats = pstats.Stats(main)
    with lock:
        for profile in profiles:
            stats.add(cast(Any, _Snapshot(profile)))
    return stats, wall


def _profile_async(fn: Callable[[], Any]) -> tuple[pstats.Stats, float]:
    """Profile ``asyncio.run(fn())`` and every thread it starts (anyio's worker threads too).

    A first, unprofiled run warms imports and caches; the profiled one runs on a new loop, so
    its worker threads are new and profiled from their start.
    """
    asyncio.run(fn())
    return _profile_threads(lambda: asyncio.run(fn()))


def run(base_url_for: Callable[[float], str], s: Settings) -> dict[str, Any]:
    """Profile our batch (sync, async) at the batch latency, and our per-call paths at zero."""
    from resilient_llm import AsyncResilientClient, ResilientClient

    inputs = texts(s.batch_texts)
    options: dict[str, Any] = {
        "batch_size": s.batch_size,
        "max_concurrency": s.concurrency,
        "dimensions": s.dimensions,
    }
    results: dict[str, Any] = {}

    base_url = base_url_for(s.latency)
    with ResilientClient(api_key=API_KEY, base_url=base_url) as client:
        client.embed_batch(inputs[: s.warmup_texts], **options)
        with _Collections() as collections:
            stats, wall = _profile_threads(lambda: client.embed_batch(inputs, **options))
    results["batch, sync"] = summarize(stats, wall)
    results["batch, sync"]["gc"] = collections.summary()

    base_url = base_url_for(s.latency)
    aclient = AsyncResilientClient(api_key=API_KEY, base_url=base_url)

    async def batch() -> None:
        await aclient.embed_batch(inputs, **options)

    asyncio.run(batch())  # warm: imports, caches
    with _Collections() as collections:
        stats, wall = _profile_threads(lambda: asyncio.run(batch()))
    results["batch, async"] = summarize(stats, wall)
    results["batch, async"]["gc"] = collections.summary()

    base_url = base_url_for(0.0)
    n = max(1, s.per_call_n // 8)  # profiled calls are several times slower
    with ResilientClient(api_key=API_KEY, base_url=base_url) as client:
        for label, call in (
            ("per-call embed, sync", lambda: client.embed(SHORT_TEXT)),
            ("per-call chat, sync", lambda: client.chat(CHAT_MESSAGES)),
        ):
            for _ in range(20):
                call()

            def calls(call: Callable[[], Any] = call) -> None:
                for _ in range(n):
                    call()

            stats, wall = _profile_threads(calls)
            results[label] = summarize(stats, wall)

    aclient = AsyncResilientClient(api_key=API_KEY, base_url=base_url)

    async def embeds() -> None:
        for _ in range(n):
            await aclient.embed(SHORT_TEXT)

    async def chats() -> None:
        for _ in range(n):
            await aclient.chat(CHAT_MESSAGES)

    for label, fn in (("per-call embed, async", embeds), ("per-call chat, async", chats)):
        stats, wall = _profile_async(fn)
        results[label] = summarize(stats, wall)
    return results
