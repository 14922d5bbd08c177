"""Every contender of the batch scenarios (2, 3, 5, 6), written the way its users write it.

Each entry builds a client against a base URL and returns ``(call, close)``: ``call(texts)`` embeds
the whole batch (a coroutine function for async contenders) and returns an `Outcome`; ``close``
releases the client. Building and closing are not timed; the connections a call opens are.

Items lost are counted as the user sees them: when ``asyncio.gather`` or ``pool.map`` raises, the
results of the batches that did succeed are gone with it, so every input is lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from benchmarks._common import API_KEY, EMBEDDING_MODEL, Settings


@dataclass
class Outcome:
    ok: int
    lost: int
    note: str = ""
    # When the user's call raised: the moment it did (cleaning up stragglers is not timed).
    ended_at: float | None = None
    requests: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    is_async: bool
    build: Callable[[str, Settings], tuple[Callable[[list[str]], Any], Callable[[], Any]]]
    requires: str | None = None  # module of an optional peer
    sequential: bool = False  # one request at a time: slow, fewer repeats
    # A reference (a floor, a diagnostic of ours), not a peer: never in "faster than every peer".
    reference: bool = False
    under_faults: bool = True  # also run the fault scenario


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _lost_all(n: int, error: BaseException, failed_batches: int | None = None) -> Outcome:
    detail = "" if failed_batches is None else f" ({failed_batches} batch(es) had failed)"
    return Outcome(
        ok=0,
        lost=n,
        note=f"raised {type(error).__name__}: every result lost{detail}",
        ended_at=time.perf_counter(),
    )


# -- resilient_llm ------------------------------------------------------------------------------


def _ours_outcome(result: Any) -> Outcome:
    stats = result.stats
    note = ""
    if stats.failed:
        first = result.failures[0]
        note = (
            f"{stats.failed} failed: {first.error_type} (HTTP {first.status}) after "
            f"{first.attempts} attempt(s)"
        )
    return Outcome(
        ok=stats.succeeded,
        lost=stats.failed,
        note=note,
        requests=stats.requests,
        retries=stats.retries,
    )


def ours_sync(
    base_url: str, s: Settings, **settings: Any
) -> tuple[Callable[..., Any], Callable[[], Any]]:
    from resilient_llm import ResilientClient

    client = ResilientClient(
        api_key=API_KEY, base_url=base_url, max_concurrency=s.concurrency, **settings
    )

    def call(texts: list[str]) -> Outcome:
        result = client.embed_batch(
            texts,
            batch_size=s.batch_size,
            max_concurrency=s.concurrency,
            dimensions=s.dimensions,
        )
        return _ours_outcome(result)

    return call, client.close


def ours_async(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    from resilient_llm import AsyncResilientClient

    client = AsyncResilientClient(api_key=API_KEY, base_url=base_url, max_concurrency=s.concurrency)

    async def call(texts: list[str]) -> Outcome:
        result = await client.embed_batch(
            texts,
            batch_size=s.batch_size,
            max_concurrency=s.concurrency,
            dimensions=s.dimensions,
        )
        return _ours_outcome(result)

    return call, client.aclose


def ours_sync_short_backoff(
    base_url: str, s: Settings
) -> tuple[Callable[..., Any], Callable[[], Any]]:
    """Ours with a shorter back-off than the default (a setting users have): what the default
    back-off costs under faults."""
    from resilient_llm import RetryPolicy

    return ours_sync(base_url, s, retry=RetryPolicy(base_delay=0.05))


def ours_sync_own_pause(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    """Diagnostic, not a setting: a 429's Retry-After delays only the request that met it,
    instead of pausing every worker of the batch. What the batch-wide pause costs."""
    from resilient_llm import _call

    original = _call.CallState.pause_for
    _call.CallState.pause_for = lambda self, error: None  # type: ignore[method-assign]
    call, close = ours_sync(base_url, s)

    def restore() -> None:
        close()
        _call.CallState.pause_for = original  # type: ignore[method-assign]

    return call, restore


# -- the raw official client --------------------------------------------------------------------


def raw_async(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url)

    async def one(batch: list[str]) -> list[list[float]]:
        response = await client.embeddings.create(
            input=batch, model=EMBEDDING_MODEL, dimensions=s.dimensions
        )
        return [item.embedding for item in response.data]

    return _gather(one, s), client.close


def raw_async_body(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    """The raw client asked for the response body, decoded by hand (what we do inside)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url)

    async def one(batch: list[str]) -> list[list[float]]:
        raw = await client.embeddings.with_raw_response.create(
            input=batch, model=EMBEDDING_MODEL, dimensions=s.dimensions, encoding_format="base64"
        )
        vectors = []
        for item in json.loads(raw.http_response.content)["data"]:
            values = array("f")
            values.frombytes(base64.b64decode(item["embedding"]))
            vectors.append(values.tolist())
        return vectors

    return _gather(one, s), client.close


def _gather(one: Callable[[list[str]], Any], s: Settings) -> Callable[[list[str]], Any]:
    async def call(texts: list[str]) -> Outcome:
        semaphore = asyncio.Semaphore(s.concurrency)
        failed = 0

        async def bounded(batch: list[str]) -> list[list[float]]:
            nonlocal failed
            async with semaphore:
                try:
                    vectors: list[list[float]] = await one(batch)
                except Exception:
                    failed += 1
                    raise
                return vectors

        tasks = [asyncio.ensure_future(bounded(batch)) for batch in _chunks(texts, s.batch_size)]
        try:
            results = await asyncio.gather(*tasks)
        except Exception as error:
            outcome = _lost_all(len(texts), error, failed)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return outcome
        return Outcome(ok=sum(map(len, results)), lost=0)

    return call


def floor_threads(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    """The floor of this machine and server: bare ``http.client`` on 16 threads, each answer
    parsed as JSON and nothing more (no vectors made). No client can be faster."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def call(texts: list[str]) -> Outcome:
        bodies = [
            json.dumps(
                {
                    "input": batch,
                    "model": EMBEDDING_MODEL,
                    "dimensions": s.dimensions,
                    "encoding_format": "base64",
                }
            ).encode()
            for batch in _chunks(texts, s.batch_size)
        ]
        lock = threading.Lock()
        counts = {"ok": 0}

        def work() -> None:
            connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
            try:
                while True:
                    with lock:
                        if not bodies:
                            return
                        body = bodies.pop()
                    connection.request("POST", parts.path + "/embeddings", body, headers)
                    data = json.loads(connection.getresponse().read())["data"]
                    with lock:
                        counts["ok"] += len(data)
            finally:
                connection.close()

        threads = [threading.Thread(target=work) for _ in range(s.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Outcome(ok=counts["ok"], lost=len(texts) - counts["ok"])

    return call, lambda: None


def raw_threads(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    from openai import OpenAI

    client = OpenAI(api_key=API_KEY, base_url=base_url)

    def one(batch: list[str]) -> list[list[float]]:
        response = client.embeddings.create(
            input=batch, model=EMBEDDING_MODEL, dimensions=s.dimensions
        )
        return [item.embedding for item in response.data]

    def call(texts: list[str]) -> Outcome:
        pool = ThreadPoolExecutor(max_workers=s.concurrency)
        try:
            results = list(pool.map(one, _chunks(texts, s.batch_size)))
        except Exception as error:
            return _lost_all(len(texts), error)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return Outcome(ok=sum(map(len, results)), lost=0)

    return call, client.close


# -- LangChain ----------------------------------------------------------------------------------


def _langchain(base_url: str, s: Settings) -> Any:
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=True (the default) tokenizes every text with tiktoken first,
    # which downloads its encoding on first use: off, as anyone on a compatible server does.
    return OpenAIEmbeddings(
        model=EMBEDDING_MODEL,
        dimensions=s.dimensions,
        chunk_size=s.batch_size,
        base_url=base_url,
        api_key=API_KEY,
        check_embedding_ctx_length=False,
    )


def langchain_sync(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    embeddings = _langchain(base_url, s)

    def call(texts: list[str]) -> Outcome:
        try:
            vectors = embeddings.embed_documents(texts)
        except Exception as error:
            return _lost_all(len(texts), error)
        return Outcome(ok=len(vectors), lost=len(texts) - len(vectors))

    return call, lambda: None


def langchain_async(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    embeddings = _langchain(base_url, s)

    async def call(texts: list[str]) -> Outcome:
        try:
            vectors = await embeddings.aembed_documents(texts)
        except Exception as error:
            return _lost_all(len(texts), error)
        return Outcome(ok=len(vectors), lost=len(texts) - len(vectors))

    return call, lambda: None


# -- LlamaIndex ---------------------------------------------------------------------------------


def _llamaindex(base_url: str, s: Settings, num_workers: int | None) -> Any:
    from llama_index.embeddings.openai import OpenAIEmbedding

    return OpenAIEmbedding(
        model=EMBEDDING_MODEL,
        dimensions=s.dimensions,
        embed_batch_size=s.batch_size,
        api_key=API_KEY,
        api_base=base_url,
        num_workers=num_workers,
    )


def llamaindex_sync(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
    model = _llamaindex(base_url, s, None)

    def call(texts: list[str]) -> Outcome:
        try:
            vectors = model.get_text_embedding_batch(texts)
        except Exception as error:
            return _lost_all(len(texts), error)
        return Outcome(ok=len(vectors), lost=len(texts) - len(vectors))

    return call, lambda: None


def _llamaindex_async(
    num_workers: int | None,
) -> Callable[[str, Settings], tuple[Callable[..., Any], Callable[[], Any]]]:
    def build(base_url: str, s: Settings) -> tuple[Callable[..., Any], Callable[[], Any]]:
        workers = s.concurrency if num_workers else None
        model = _llamaindex(base_url, s, workers)

        async def call(texts: list[str]) -> Outcome:
            try:
                vectors = await model.aget_text_embedding_batch(texts)
            except Exception as error:
                return _lost_all(len(texts), error)
            return Outcome(ok=len(vectors), lost=len(texts) - len(vectors))

        return call, lambda: None

    return build


CONTENDERS: dict[str, Contender] = {
    c.key: c
    for c in [
        Contender("ours-async", "resilient_llm `embed_batch` (async)", True, ours_async),
        Contender("ours-sync", "resilient_llm `embed_batch` (sync)", False, ours_sync),
        Contender("raw-async", "raw `AsyncOpenAI` + gather + Semaphore(16)", True, raw_async),
        Contender("raw-threads", "raw `OpenAI` + 16 threads", False, raw_threads),
        Contender(
            "raw-async-body",
            "raw async, `with_raw_response` bodies decoded by hand",
            True,
            raw_async_body,
            reference=True,
        ),
        Contender(
            "floor-threads",
            "floor: bare `http.client` on 16 threads, JSON parsed, no vectors made",
            False,
            floor_threads,
            reference=True,
            under_faults=False,
        ),
        Contender(
            "ours-sync-short-backoff",
            "ours (sync), `RetryPolicy(base_delay=0.05)`",
            False,
            ours_sync_short_backoff,
            reference=True,
        ),
        Contender(
            "ours-sync-own-pause",
            "ours (sync), diagnostic: a Retry-After delays only its own request",
            False,
            ours_sync_own_pause,
            reference=True,
        ),
        Contender(
            "langchain-sync",
            "LangChain `embed_documents` (chunk_size=100)",
            False,
            langchain_sync,
            requires="langchain_openai",
            sequential=True,
        ),
        Contender(
            "langchain-async",
            "LangChain `aembed_documents` (chunk_size=100)",
            True,
            langchain_async,
            requires="langchain_openai",
            sequential=True,
        ),
        Contender(
            "llamaindex-sync",
            "LlamaIndex `get_text_embedding_batch`",
            False,
            llamaindex_sync,
            requires="llama_index.embeddings.openai",
            sequential=True,
        ),
        Contender(
            "llamaindex-async-16",
            "LlamaIndex `aget_text_embedding_batch`, num_workers=16",
            True,
            _llamaindex_async(16),
            requires="llama_index.embeddings.openai",
        ),
        Contender(
            "llamaindex-async",
            "LlamaIndex `aget_text_embedding_batch`, no num_workers (all in flight)",
            True,
            _llamaindex_async(None),
            requires="llama_index.embeddings.openai",
        ),
    ]
}
