"""Issue 12, row 11 (SPEC §6): ``on_progress(done, total)`` gets ``total == len(inputs)`` from the
first call when the inputs have a length.

Today a list of 100 reports totals 20, 30, ... 100 (the window read so far).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resilient_llm.testing import MockOpenAIServer

from ._public import DIMS, async_client, sync_client

TEXTS = [f"progress text {i}" for i in range(100)]


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self) -> None:
        assert self.calls, "on_progress was never called"
        totals = {total for _, total in self.calls}
        assert totals == {len(TEXTS)}, f"totals reported: {totals} (first calls {self.calls[:5]})"
        dones = [done for done, _ in self.calls]
        assert dones == sorted(dones), "done went backwards"
        assert dones[-1] == len(TEXTS)


FORMS: dict[str, Callable[[Any, Calls], Any]] = {
    "embed_batch": lambda c, p: c.embed_batch(
        TEXTS, batch_size=10, max_concurrency=2, dimensions=DIMS, on_progress=p
    ),
    "summarize_batch": lambda c, p: c.summarize_batch(TEXTS, max_concurrency=4, on_progress=p),
    "map": lambda c, p: c.map(len, TEXTS, max_concurrency=4, on_progress=p),
}


async def _length(text: str) -> int:
    return len(text)


ASYNC_FORMS: dict[str, Callable[[Any, Calls], Any]] = {
    **{name: form for name, form in FORMS.items() if name != "map"},
    "map": lambda c, p: c.map(_length, TEXTS, max_concurrency=4, on_progress=p),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_total_is_known_from_the_first_call_sync(form: str, server: MockOpenAIServer) -> None:
    progress = Calls()
    with sync_client(server.base_url) as client:
        result = FORMS[form](client, progress)
    assert result.ok
    progress.check()


@pytest.mark.anyio
@pytest.mark.parametrize("form", sorted(ASYNC_FORMS))
async def test_total_is_known_from_the_first_call_async(
    form: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    progress = Calls()
    async with async_client(server.base_url) as client:
        result = await ASYNC_FORMS[form](client, progress)
    assert result.ok
    progress.check()
