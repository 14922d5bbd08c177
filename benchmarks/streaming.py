"""Scenario 7: streamed chat against a server that streams at once (time to first chunk, per chunk).

``n`` sequential streams of each contender, repeated; as in scenario 1 the contenders take turns
slice by slice, so a slow moment of the machine hits them all alike. For each stream: the time
from the call to its first chunk (what a user waits before anything shows; for
``complete(stream=True)``, which yields text only, the first text, compared with the raw
stream's first chunk that carries text), and the time after it divided by the chunks the server
sent after the first (what the wrapper adds to every token). The raw rows iterate the official
``Stream`` / ``AsyncStream`` and read each chunk's text, as a front-end does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks._common import API_KEY, CHAT_MODEL, STREAM_MESSAGES, Settings

# One stream: seconds to its first item, to its first text, in all; and the items it yielded.
Timed = tuple[float, float, float, int]
Factory = Callable[[str], tuple[Callable[[], Any], Callable[[], Any]]]


@dataclass(frozen=True)
class StreamContender:
    key: str
    label: str
    is_async: bool
    build: Factory


def _text(chunk: Any) -> str:
    choices = chunk.choices
    return (choices[0].delta.content or "") if choices else ""


class _Clock:
    def __init__(self, started: float) -> None:
        self.started = started
        self.first = self.text = 0.0
        self.items = 0

    def saw(self, item: Any) -> None:
        now = time.perf_counter()
        if not self.items:
            self.first = now
        self.items += 1
        if not self.text and (item if isinstance(item, str) else _text(item)):
            self.text = now

    def timed(self) -> Timed:
        start = self.started
        return self.first - start, self.text - start, time.perf_counter() - start, self.items


def _consume(stream: Any, started: float) -> Timed:
    clock = _Clock(started)
    with stream:
        for item in stream:
            clock.saw(item)
    return clock.timed()


async def _aconsume(stream: Any, started: float) -> Timed:
    clock = _Clock(started)
    async with stream:
        async for item in stream:
            clock.saw(item)
    return clock.timed()


def _ours_sync(kind: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from resilient_llm import ResilientClient

        client = ResilientClient(api_key=API_KEY, base_url=base_url)
        prompt = STREAM_MESSAGES[0]["content"]

        def call() -> Timed:
            started = time.perf_counter()
            if kind == "chat":
                stream: Any = client.chat(STREAM_MESSAGES, stream=True)
            else:
                stream = client.complete(prompt, stream=True)
            return _consume(stream, started)

        return call, client.close

    return build


def _raw_sync(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from openai import OpenAI

    client = OpenAI(api_key=API_KEY, base_url=base_url)

    def call() -> Timed:
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        return _consume(stream, started)

    return call, client.close


def _ours_async(kind: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from resilient_llm import AsyncResilientClient

        client = AsyncResilientClient(api_key=API_KEY, base_url=base_url)
        prompt = STREAM_MESSAGES[0]["content"]

        async def call() -> Timed:
            started = time.perf_counter()
            if kind == "chat":
                stream: Any = await client.chat(STREAM_MESSAGES, stream=True)
            else:
                stream = await client.complete(prompt, stream=True)
            return await _aconsume(stream, started)

        return call, client.aclose

    return build


def _raw_async(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url)

    async def call() -> Timed:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model=CHAT_MODEL,
            messages=STREAM_MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        return await _aconsume(stream, started)

    return call, client.close


CONTENDERS: list[StreamContender] = [
    StreamContender("ours-chat", "resilient_llm `chat(stream=True)`", False, _ours_sync("chat")),
    StreamContender(
        "ours-complete", "resilient_llm `complete(stream=True)`", False, _ours_sync("complete")
    ),
    StreamContender("raw", "raw `chat.completions.create(stream=True)`", False, _raw_sync),
    StreamContender("ours-chat", "resilient_llm `chat(stream=True)`", True, _ours_async("chat")),
    StreamContender(
        "ours-complete", "resilient_llm `complete(stream=True)`", True, _ours_async("complete")
    ),
    StreamContender("raw", "raw `chat.completions.create(stream=True)`", True, _raw_async),
]

SLICES = 10


def _slices(n: int) -> list[int]:
    count = min(SLICES, n)
    return [n // count + (1 if k < n % count else 0) for k in range(count)]


def _summarize(timed: list[Timed]) -> tuple[float, float, float, int]:
    """Means over the streams: seconds to the first item, to the first text, after the first
    item; and the items of one stream."""
    count = len(timed)
    return (
        sum(t[0] for t in timed) / count,
        sum(t[1] for t in timed) / count,
        sum(t[2] - t[0] for t in timed) / count,
        timed[0][3],
    )


def run(base_url: str, s: Settings) -> list[dict[str, Any]]:
    """Time every contender; one row per contender with its per-repeat samples."""
    n = s.stream_n
    warmup = max(5, n // 20)
    samples: dict[int, list[tuple[float, float, float, int]]] = {
        i: [] for i in range(len(CONTENDERS))
    }

    sync = [i for i, c in enumerate(CONTENDERS) if not c.is_async]
    built = {i: CONTENDERS[i].build(base_url) for i in sync}
    for i in sync:
        for _ in range(warmup):
            built[i][0]()
    for _ in range(s.per_call_repeats):
        timed: dict[int, list[Timed]] = {i: [] for i in sync}
        for size in _slices(n):
            for i in sync:
                timed[i] += [built[i][0]() for _ in range(size)]
        for i in sync:
            samples[i].append(_summarize(timed[i]))
    for i in sync:
        built[i][1]()

    async def run_async() -> None:
        chosen = [i for i, c in enumerate(CONTENDERS) if c.is_async]
        made = {i: CONTENDERS[i].build(base_url) for i in chosen}
        for i in chosen:
            for _ in range(warmup):
                await made[i][0]()
        for _ in range(s.per_call_repeats):
            timed: dict[int, list[Timed]] = {i: [] for i in chosen}
            for size in _slices(n):
                for i in chosen:
                    timed[i] += [await made[i][0]() for _ in range(size)]
            for i in chosen:
                samples[i].append(_summarize(timed[i]))
        for i in chosen:
            closed = made[i][1]()
            if asyncio.iscoroutine(closed):
                await closed

    asyncio.run(run_async())
    return [
        {
            "key": c.key,
            "label": c.label,
            "is_async": c.is_async,
            "first": [x[0] for x in samples[i]],
            "first_text": [x[1] for x in samples[i]],
            "after_first": [x[2] for x in samples[i]],
            "items": samples[i][0][3] if samples[i] else 0,
            "streams": n,
        }
        for i, c in enumerate(CONTENDERS)
    ]
