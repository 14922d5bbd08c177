"""Scenarios 2, 3, 5 and 6: one batch of embeddings through each contender.

Every timed run gets a fresh server (its own connection counter and, under faults, its own
seeded fault sequence) and a fresh client, so connection setup is part of what is measured. Async
runs carry a heartbeat task that sleeps a few milliseconds in a loop and records how late it wakes:
the event loop's responsiveness while the batch runs (scenario 5).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
from dataclasses import asdict
from typing import Any

from benchmarks._common import Run, Settings, installed, percentile, texts
from benchmarks._serve import ServerControl
from benchmarks.contenders import CONTENDERS, Contender, Outcome


def mean_in_flight(timeline: list[tuple[float, float, int | None]]) -> float:
    """Requests the server had in hand on average, from its first request to its last answer."""
    if not timeline:
        return 0.0
    start = min(started for started, _, _ in timeline)
    end = max(started + duration for started, duration, _ in timeline)
    busy = sum(duration for _, duration, _ in timeline)
    return busy / (end - start) if end > start else 0.0


def available(s: Settings) -> list[Contender]:
    return [
        c for c in CONTENDERS.values() if c.requires is None or (s.peers and installed(c.requires))
    ]


async def _heartbeat(stop: asyncio.Event, delays: list[float], interval: float) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(interval)
        delays.append(time.perf_counter() - started - interval)


class _Collections:
    """The garbage collector's passes during a run: per generation, how many and the longest."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.passes[generation] += 1
        took = time.perf_counter() - self._started
        self.longest[generation] = max(self.longest[generation], took)

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, list[float]]:
        return {
            "passes": [float(n) for n in self.passes],
            "longest_ms": [t * 1e3 for t in self.longest],
        }


def _summarize_heartbeat(delays: list[float]) -> dict[str, float]:
    return {
        "p99_ms": percentile(delays, 0.99) * 1e3,
        "max_ms": max(delays, default=0.0) * 1e3,
        "beats": float(len(delays)),
    }


def _close(close: Any) -> None:
    closed = close()
    if inspect.isawaitable(closed):
        raise RuntimeError("an async close must run on its loop")


def _timed_sync(contender: Contender, base_url: str, s: Settings, inputs: list[str]) -> Run:
    call, close = contender.build(base_url, s)
    try:
        cpu = time.process_time()
        started = time.perf_counter()
        outcome: Outcome = call(inputs)
        ended = outcome.ended_at or time.perf_counter()
        cpu = time.process_time() - cpu
    finally:
        _close(close)
    return _run(outcome, ended - started, cpu)


def _timed_async(contender: Contender, base_url: str, s: Settings, inputs: list[str]) -> Run:
    async def main() -> Run:
        call, close = contender.build(base_url, s)
        stop = asyncio.Event()
        delays: list[float] = []
        beat = asyncio.create_task(_heartbeat(stop, delays, s.heartbeat_interval))
        collections = _Collections()
        try:
            await asyncio.sleep(0)
            with collections:
                cpu = time.process_time()
                started = time.perf_counter()
                outcome: Outcome = await call(inputs)
                ended = outcome.ended_at or time.perf_counter()
                cpu = time.process_time() - cpu
        finally:
            stop.set()
            await beat
            closed = close()
            if inspect.isawaitable(closed):
                await closed
        run = _run(outcome, ended - started, cpu)
        run.heartbeat = _summarize_heartbeat(delays)
        run.extra["gc"] = collections.summary()
        return run

    return asyncio.run(main())


def _run(outcome: Outcome, seconds: float, cpu: float) -> Run:
    return Run(
        seconds=seconds,
        ok=outcome.ok,
        lost=outcome.lost,
        cpu_seconds=cpu,
        requests=outcome.requests,
        retries=outcome.retries,
        note=outcome.note,
    )


def measure(
    control: ServerControl, s: Settings, contender: Contender, *, faults: bool
) -> dict[str, Any]:
    """Warm the contender up, then time ``repeats`` runs of the whole batch."""
    inputs = texts(s.batch_texts)
    timed = _timed_async if contender.is_async else _timed_sync
    warm_url = control.configure(latency=s.latency)
    timed(contender, warm_url, s, inputs[: s.warmup_texts])

    repeats = s.slow_peer_repeats if contender.sequential else s.repeats
    runs = []
    for repeat in range(repeats):
        base_url = control.configure(
            latency=s.latency,
            fail_rate=s.fail_rate if faults else 0.0,
            seed=s.seed + repeat,
        )
        run = timed(contender, base_url, s, inputs)
        stats = control.stats()
        run.connections = stats["connections_opened"]
        run.peak_in_flight = stats["peak_in_flight"]
        run.extra = {
            **run.extra,
            "server_requests": stats["total_requests"],
            "faults": stats["faults_injected"],
            "mean_in_flight": mean_in_flight(control.timeline()),
        }
        runs.append(asdict(run))
    return {
        "key": contender.key,
        "label": contender.label,
        "is_async": contender.is_async,
        "faults": faults,
        "runs": runs,
    }
