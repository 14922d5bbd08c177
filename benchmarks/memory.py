"""Scenario 4: memory. Peak RSS of the streaming form as the input grows, and over repeated batches.

Each size runs in a process of its own (peak RSS never goes down), forked from one that has
imported the library, feeding a generator of texts to the sync ``iter_embed_batch`` and dropping
every vector as it arrives, as a job that writes results to disk does. Flat peaks mean the batch
holds a bounded window, not the input.

The repeated form runs the async ``embed_batch`` of the pinned batch several times in one
process (a service that embeds a corpus again and again), the kernel's peak RSS reset before
each run: flat peaks mean nothing a batch allocates outlives it.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import resource
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from benchmarks._common import API_KEY, Settings, text, texts


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _generate(n: int, pool: int) -> Iterator[str]:
    for i in range(n):
        yield text(i % pool)


def _reset_peak() -> bool:
    """Reset the kernel's peak RSS of this process (Linux 4.0+); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _in_child(fn: Any, *args: Any) -> Any:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, fn, args))
    child.start()
    send.close()
    result = receive.recv()
    child.join()
    return result


def run_sizes(base_url: str, s: Settings) -> dict[str, Any]:
    """Every size of ``s.memory_sizes``, each in a forked child; then the repeated batches."""
    import resilient_llm  # noqa: F401  # imported once, before forking

    return {
        "sizes": [_in_child(run, base_url, s, n) for n in s.memory_sizes],
        "repeated": _in_child(run_repeated, base_url, s),
    }


def _child(send: Connection, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        send.send(fn(*args))
    finally:
        send.close()


def run_repeated(base_url: str, s: Settings) -> list[dict[str, Any]]:
    """The async ``embed_batch`` of ``s.batch_texts`` texts, ``s.repeated_batches`` times."""
    from resilient_llm import AsyncResilientClient

    inputs = texts(s.batch_texts)
    options: dict[str, Any] = {
        "batch_size": s.batch_size,
        "max_concurrency": s.concurrency,
        "dimensions": s.dimensions,
    }

    async def main() -> list[dict[str, Any]]:
        runs = []
        async with AsyncResilientClient(api_key=API_KEY, base_url=base_url) as client:
            await client.embed_batch(inputs[: s.warmup_texts], **options)
            for number in range(1, s.repeated_batches + 1):
                gc.collect()
                before = _status_kib("VmRSS")
                reset = _reset_peak()
                started = time.perf_counter()
                result = await client.embed_batch(inputs, **options)
                seconds = time.perf_counter() - started
                peak = _status_kib("VmHWM") if reset else None
                failed = result.stats.failed
                del result
                gc.collect()
                runs.append(
                    {
                        "run": number,
                        "seconds": seconds,
                        "rss_before_kib": before,
                        "peak_rss_kib": peak,
                        "rss_after_kib": _status_kib("VmRSS"),
                        "failed": failed,
                    }
                )
        return runs

    return asyncio.run(main())


def run(base_url: str, s: Settings, n: int) -> dict[str, Any]:
    from resilient_llm import ItemFailure, ResilientClient

    pool = s.batch_texts  # the texts whose vectors the server has cached
    with ResilientClient(api_key=API_KEY, base_url=base_url) as client:
        options: dict[str, Any] = {
            "batch_size": s.batch_size,
            "max_concurrency": s.concurrency,
            "dimensions": s.dimensions,
        }
        with client.iter_embed_batch(_generate(s.warmup_texts, pool), **options) as stream:
            for _ in stream:
                pass
        baseline = _status_kib("VmRSS")
        ok = failed = 0
        started = time.perf_counter()
        with client.iter_embed_batch(_generate(n, pool), **options) as stream:
            for _, outcome in stream:
                if isinstance(outcome, ItemFailure):
                    failed += 1
                else:
                    ok += 1
        seconds = time.perf_counter() - started
    return {
        "n": n,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        "baseline_rss_kib": baseline,
        "peak_rss_kib": _status_kib("VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
