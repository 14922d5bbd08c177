"""The async driver: an anyio task group runs the programs of a job, bounded by slots.

It receives an ``execute`` coroutine function (one call and the slots in, one
:class:`~.programs.Reply` out), never the client. A request holds a slot only while it is on the
wire: one that backs off gives its slot back while it sleeps, so the pipe stays full during
faults. The user's iterable is read on the event loop; turning long inputs into requests (token
counting) goes to a worker thread a chunk at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from .flow import AdaptiveLimit, Outcome
from .jobs import Job
from .programs import Program, Rejected, Reply

__all__ = ["SourceFailed", "Slots", "adrive", "run_tasks"]

# Raw inputs read from the user's iterable at a time.
_CHUNK = 64


class Slots:
    """Requests on the wire at once: at most the adaptive target (lowered on 429s)."""

    def __init__(self, adaptive: AdaptiveLimit) -> None:
        self._adaptive = adaptive
        self._limiter = anyio.CapacityLimiter(adaptive.limit)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._limiter:
            yield
        self._limiter.total_tokens = max(1, self._adaptive.limit)


AsyncExecute = Callable[[Any, Slots], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class SourceFailed:
    """The user's iterable raised: the stream re-raises ``error`` unchanged."""

    error: BaseException


async def adrive(program: Program, execute: AsyncExecute, slots: Slots) -> list[Outcome]:
    """Carry out one program: each call it yields is executed and its reply sent back."""
    try:
        call = next(program)
        while True:
            call = program.send(await execute(call, slots))
    except StopIteration as done:
        outcomes: list[Outcome] = done.value
        return outcomes


def _read(inputs: Iterator[object]) -> list[object]:
    return list(itertools.islice(inputs, _CHUNK))


async def run_tasks(
    job: Job[Any],
    source: Iterable[object],
    execute: AsyncExecute,
    send: MemoryObjectSendStream[list[Outcome] | SourceFailed],
) -> None:
    """Run ``job`` over ``source``, sending the outcomes of each unit as it finishes."""
    slots = Slots(job.state.adaptive)
    # Units in flight: twice the slots, so that units sleeping in back-off do not starve the pipe.
    window = anyio.Semaphore(2 * job.options.max_concurrency)

    async def run_one(program: Program, sender: MemoryObjectSendStream[Any]) -> None:
        # The unit leaves the window once its outcomes are handed over: memory stays bounded.
        try:
            async with sender:
                await sender.send(await adrive(program, execute, slots))
        finally:
            window.release()

    async with send, anyio.create_task_group() as workers:
        inputs = iter(source)
        while True:
            try:
                raws = _read(inputs)
            except Exception as error:
                await send.send(SourceFailed(error))
                return
            if not raws:
                units = job.finish()
            elif job.heavy(raws):
                units = await anyio.to_thread.run_sync(job.prepare, raws)
            else:
                units = job.prepare(raws)
            for unit in units:
                if isinstance(unit, Rejected):
                    await send.send(job.reject(unit))
                    continue
                await window.acquire()
                workers.start_soon(run_one, job.program(unit), send.clone())
            if not raws:
                return
