"""Scenario 4: peak memory of the streaming form as the input grows.

Each size runs in a process of its own (peak RSS never goes down), forked from one that has
imported the library, feeding a generator of texts to the sync ``iter_embed_batch`` and dropping
every vector as it arrives, as a job that writes results to disk does. Flat peaks mean the batch
holds a bounded window, not the input.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from benchmarks._common import API_KEY, Settings, text


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _generate(n: int, pool: int) -> Iterator[str]:
    for i in range(n):
        yield text(i % pool)


def run_sizes(base_url: str, s: Settings) -> list[dict[str, Any]]:
    """Measure every size of ``s.memory_sizes``, each in a forked child."""
    import resilient_llm  # noqa: F401  # imported once, before forking

    context = multiprocessing.get_context("fork")
    results = []
    for n in s.memory_sizes:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(send, base_url, s, n))
        child.start()
        send.close()
        results.append(receive.recv())
        child.join()
    return results


def _child(send: Connection, base_url: str, s: Settings, n: int) -> None:
    try:
        send.send(run(base_url, s, n))
    finally:
        send.close()


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
