"""Scenario 8 (issue 13): ``map`` over trivial items, sync against async.

The function does nothing, so what is measured is the batch machinery itself: reading the items,
bounding the concurrency, accounting for every item, keeping the order. Both clients keep their
defaults (``max_concurrency=8``). Each timed run uses a fresh client; building it is not timed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks._common import API_KEY, Settings


def _identity(item: Any) -> Any:
    return item


async def _aidentity(item: Any) -> Any:
    return item


def _sync_run(base_url: str, n: int) -> tuple[float, float, int]:
    from resilient_llm import ResilientClient

    with ResilientClient(api_key=API_KEY, base_url=base_url) as client:
        client.map(_identity, range(100))  # threads started, imports done
        cpu, started = time.process_time(), time.perf_counter()
        result = client.map(_identity, range(n))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return wall, cpu, result.stats.succeeded


def _async_run(base_url: str, n: int) -> tuple[float, float, int]:
    from resilient_llm import AsyncResilientClient

    async def main() -> tuple[float, float, int]:
        async with AsyncResilientClient(api_key=API_KEY, base_url=base_url) as client:
            await client.map(_aidentity, range(100))
            cpu, started = time.process_time(), time.perf_counter()
            result = await client.map(_aidentity, range(n))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return wall, cpu, result.stats.succeeded

    return asyncio.run(main())


def run(base_url: str, s: Settings) -> list[dict[str, Any]]:
    """Both forms, taking turns, ``s.repeats`` times each."""
    runs: dict[str, list[tuple[float, float, int]]] = {"sync": [], "async": []}
    for _ in range(s.repeats):
        runs["sync"].append(_sync_run(base_url, s.map_items))
        runs["async"].append(_async_run(base_url, s.map_items))
    return [
        {
            "key": key,
            "label": f"`{'await ' if key == 'async' else ''}client.map(fn, range({s.map_items}))`"
            f" ({key})",
            "is_async": key == "async",
            "walls": [r[0] for r in timed],
            "cpus": [r[1] for r in timed],
            "succeeded": [r[2] for r in timed],
        }
        for key, timed in runs.items()
    ]
