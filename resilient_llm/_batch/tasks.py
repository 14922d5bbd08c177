"""The async driver: an anyio task group runs the programs of a job, bounded by slots.

It receives an ``execute`` coroutine function (one call and the slots in, one
:class:`~.programs.Reply` out), never the client. A request holds a slot only while it is on the
wire: one that backs off gives its slot back while it sleeps, so the pipe stays full during
faults. The user's iterable is read on the event loop; turning long inputs into requests (token
counting) goes to a worker thread a chunk at a time.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .flow import AdaptiveLimit, Outcome
from .jobs import Job
from .programs import Program, Rejected, Reply

__all__ = ["SourceFailed", "Slots", "adrive", "run_tasks"]

# Raw inputs read from the user's iterable at a time.
_CHUNK = 64


class Slots:
    """Requests on the wire at once: at most the adaptive target (lowered on 429s).

    A free slot is taken without yielding to the event loop (what follows awaits I/O anyway),
    which keeps a ``map`` of trivial items cheap; waiters are woken in order.
    """

    def __init__(self, adaptive: AdaptiveLimit) -> None:
        self._adaptive = adaptive
        self._in_use = 0
        self._waiters: deque[anyio.Event] = deque()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        while self._in_use >= max(1, self._adaptive.limit):
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                if event in self._waiters:
                    self._waiters.remove(event)
                elif event.is_set():
                    self._wake()  # pass on a wake-up this waiter will not use
                raise
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1
            self._wake()

    def _wake(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()


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
    """Run ``job`` over ``source``, sending the outcomes of each unit as it finishes.

    A fixed set of worker tasks takes units one at a time (no task per unit: a ``map`` of
    trivial items costs little more than in the sync driver); twice as many workers as slots,
    so that units sleeping in back-off do not starve the pipe. Memory holds one unit per worker.
    """
    slots = Slots(job.state.adaptive)
    programs, queue = anyio.create_memory_object_stream[list[Program]]()
    workers_count = 2 * job.options.max_concurrency

    async def worker(
        queue: MemoryObjectReceiveStream[list[Program]], sender: MemoryObjectSendStream[Any]
    ) -> None:
        async with queue, sender:
            async for group in queue:
                outcomes: list[Outcome] = []
                for program in group:
                    outcomes += await adrive(program, execute, slots)
                await sender.send(outcomes)

    async with send, anyio.create_task_group() as workers:
        for _ in range(workers_count):
            workers.start_soon(worker, queue.clone(), send.clone())
        queue.close()
        async with programs:
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
                ready = []
                for unit in units:
                    if isinstance(unit, Rejected):
                        await send.send(job.reject(unit))
                    else:
                        ready.append(job.program(unit))
                # Many small units (map items) go in groups, each run in turn by one worker:
                # fewer hand-overs, and still every slot busy.
                size = max(1, len(ready) // workers_count)
                for start in range(0, len(ready), size):
                    await programs.send(ready[start : start + size])
                if not raws:
                    return
