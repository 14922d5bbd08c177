"""Issue 12, row 13 (SPEC §6 stats; ARCH: ``requests`` counts every HTTP request sent): what a
batch reports matches what the server saw, and an async batch's memory stays flat run over run.

Today ``stats.requests`` is 8 where the server saw 40 (retries not counted) and ``map`` says
``requests=0``; the peak memory of an async ``embed_batch`` of 20,000 texts grows from 305 MB
after one run to 579 MB after three.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from resilient_llm import BatchResult
from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text

from ._public import DIMS, KEY, assert_outcomes, async_client, sync_client, vector_of

TEXTS = [f"counted text {i}" for i in range(40)]
# One of each retried failure, consumed by the first requests.
FAULTS = (
    Fault.status(500),
    Fault.status(429, retry_after=0),
    Fault.reset(),
    Fault.status(503),
    Fault.status(502),
)


def check_counts(result: BatchResult[Any], server: MockOpenAIServer, plain: int) -> None:
    seen = server.stats.total_requests
    assert server.stats.faults_injected, "no fault was injected"
    assert seen == plain + len(FAULTS), f"the server saw {seen} requests"
    assert result.stats.requests == seen, (
        f"stats.requests={result.stats.requests}, the server saw {seen} (retries included)"
    )
    assert result.stats.retries == seen - plain, (result.stats.retries, seen - plain)


def _embed_value(i: int) -> Any:
    return vector_of(TEXTS)(i)


def _summary_value(i: int) -> str:
    return chat_reply_text(TEXTS[i])


SYNC: dict[str, tuple[Callable[[Any], Any], int, Callable[[int], Any]]] = {
    "embed_batch": (
        lambda c: c.embed_batch(TEXTS, batch_size=4, max_concurrency=2, dimensions=DIMS),
        10,
        _embed_value,
    ),
    "summarize_batch": (lambda c: c.summarize_batch(TEXTS, max_concurrency=2), 40, _summary_value),
    "map(embed)": (
        lambda c: c.map(lambda t: c.embed(t, dimensions=DIMS), TEXTS, max_concurrency=2),
        40,
        _embed_value,
    ),
}


@pytest.mark.parametrize("form", sorted(SYNC))
def test_requests_counts_every_http_request_sync(form: str, server: MockOpenAIServer) -> None:
    run, plain, value_of = SYNC[form]
    server.script(*FAULTS)
    with sync_client(server.base_url) as client:
        result = run(client)
    assert_outcomes(result, TEXTS, failed=(), value_of=value_of)
    check_counts(result, server, plain)


@pytest.mark.anyio
@pytest.mark.parametrize("form", sorted(SYNC))
async def test_requests_counts_every_http_request_async(
    form: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    _, plain, value_of = SYNC[form]
    server.script(*FAULTS)
    async with async_client(server.base_url) as client:
        if form == "embed_batch":
            result = await client.embed_batch(
                TEXTS, batch_size=4, max_concurrency=2, dimensions=DIMS
            )
        elif form == "summarize_batch":
            result = await client.summarize_batch(TEXTS, max_concurrency=2)
        else:

            async def embed(text: str) -> list[float]:
                return await client.embed(text, dimensions=DIMS)

            result = await client.map(embed, TEXTS, max_concurrency=2)
    assert_outcomes(result, TEXTS, failed=(), value_of=value_of)
    check_counts(result, server, plain)


# -- memory, run over run ------------------------------------------------------------------------

MEMORY_SCRIPT = r"""
import gc, json, sys
import anyio
from resilient_llm import AsyncResilientClient

url, key, backend = sys.argv[1], sys.argv[2], sys.argv[5]
total, runs = int(sys.argv[3]), int(sys.argv[4])


def peak_rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def main():
    peaks = [peak_rss_mb()]
    async with AsyncResilientClient(base_url=url, api_key=key, deadline=60) as client:
        for run in range(runs):
            texts = (f"memory text {run} {i}" for i in range(total))
            result = await client.embed_batch(texts, dimensions=256)
            assert result.ok and len(result.values) == total, result.summary()
            del result
            gc.collect()
            peaks.append(peak_rss_mb())
    print(json.dumps(peaks))


anyio.run(main, backend=backend)
"""


def peak_memory_per_run(base_url: str, total: int, runs: int, backend: str) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, base_url, KEY, str(total), str(runs), backend],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    peaks: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("backend", ["asyncio", pytest.param("trio", marks=pytest.mark.slow)])
def test_async_embed_batch_memory_stays_flat_run_over_run(backend: str) -> None:
    """Peak RSS (VmHWM, in a child process) after 1 and after 3 runs of 20,000 texts at 256
    dimensions: a batch that keeps nothing from the previous one peaks at the same height."""
    with MockOpenAIServer() as server:
        start, first, *_, last = peak_memory_per_run(server.base_url, 20_000, 3, backend)
    one_run = first - start
    assert one_run > 20, f"a run of 20,000 vectors peaked only {one_run:.0f} MB above start"
    tolerance = 0.15 * first + 16  # allocator slack
    assert last <= first + tolerance, (
        f"peak RSS grew from {first:.0f} MB after one run to {last:.0f} MB after three"
    )
