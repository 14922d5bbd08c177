"""The sync driver: a bounded pool of threads runs the programs of a job.

It receives an ``execute`` callable (one call in, one :class:`~.programs.Reply` out), never the
client. Each worker thread keeps its own official client (the facade's per-thread registry), so
its connections are reused batch after batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .._context import current_scope, scoped
from .._lifecycle import PerProcess
from .flow import AdaptiveLimit, Outcome
from .jobs import Job
from .programs import Program, Rejected, Reply, Unit

__all__ = ["BatchCancelled", "WorkerThreads", "cancellable_sleep", "drive", "run_threads"]

logger = logging.getLogger("resilient_llm")

# How often the consuming thread wakes while it waits for workers, so Ctrl-C is seen promptly.
_POLL_SECONDS = 0.1
# Raw inputs read from the user's iterable at a time.
_READ_AHEAD = 16


class ThreadSlots:
    """Requests on the wire at once: at most the adaptive target (lowered on 429s).

    The sync twin of :class:`~.tasks.Slots`: a unit holds a slot only while a request of it is
    on the wire, so one that backs off gives its slot back while it sleeps.
    """

    def __init__(self, adaptive: AdaptiveLimit) -> None:
        self._adaptive = adaptive
        self._in_use = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._free:
            while self._in_use >= max(1, self._adaptive.limit):
                self._free.wait(_POLL_SECONDS)
            self._in_use += 1
        try:
            yield
        finally:
            with self._free:
                self._in_use -= 1
                self._free.notify()


Execute = Callable[[Any, ThreadSlots], Reply]


class BatchCancelled(Exception):
    """Internal: the batch was abandoned (Ctrl-C, an early ``break``); workers stop."""


def cancellable_sleep(seconds: float) -> None:
    """Sleep, but wake at once if the current batch is cancelled."""
    cancel = current_scope().cancel
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise BatchCancelled


def drive(program: Program, execute: Callable[[Any], Reply]) -> list[Outcome]:
    """Carry out one program: each call it yields is executed and its reply sent back."""
    try:
        call = next(program)
        while True:
            call = program.send(execute(call))
    except StopIteration as done:
        outcomes: list[Outcome] = done.value
        return outcomes


def _run_unit(
    program: Program, execute: Execute, slots: ThreadSlots, cancel: threading.Event
) -> list[Outcome]:
    def run() -> list[Outcome]:
        with scoped(cancel=cancel):
            return drive(program, lambda call: execute(call, slots))

    try:
        # A fresh context per unit: the worker thread is reused and must not leak settings.
        return contextvars.Context().run(run)
    except BatchCancelled:
        return []


class WorkerThreads:
    """A client's batch threads, kept between batches, rebuilt in a forked child.

    A batch that asks for more threads than the client's default gets threads of its own for
    its duration.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._shared = PerProcess(
            lambda: ThreadPoolExecutor(max_workers=size, thread_name_prefix="resilient_llm-batch")
        )

    @contextlib.contextmanager
    def lease(self, workers: int) -> Iterator[ThreadPoolExecutor]:
        if workers <= self._size:
            yield self._shared.get()
            return
        own = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resilient_llm-batch")
        try:
            yield own
        finally:
            own.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._shared.close(lambda pool: pool.shutdown(wait=False, cancel_futures=True))


def run_threads(
    job: Job[Any], source: Iterable[object], execute: Execute, workers: WorkerThreads
) -> Iterator[list[Outcome]]:
    """Run ``job`` over ``source``; yield the outcomes of each unit as it finishes.

    Reads ``source`` lazily, on the consuming thread: no more units than threads (twice the
    concurrency bound, so that units sleeping in back-off do not starve the pipe; the slots keep
    requests on the wire within the bound), plus a few inputs read ahead, are held at once. An
    error raised by ``source`` itself propagates unchanged.
    """
    with workers.lease(2 * job.options.max_concurrency) as pool:
        yield from _run_on(pool, job, iter(source), execute)


def _run_on(
    pool: ThreadPoolExecutor, job: Job[Any], inputs: Iterator[object], execute: Execute
) -> Iterator[list[Outcome]]:
    cancel = threading.Event()
    slots = ThreadSlots(job.state.adaptive)
    window = 2 * job.options.max_concurrency
    in_flight: set[Future[list[Outcome]]] = set()
    ready: deque[Unit] = deque()
    exhausted = False
    try:
        while True:
            while len(in_flight) < window:
                if not ready:
                    if exhausted:
                        break
                    raws = list(itertools.islice(inputs, _READ_AHEAD))
                    if not raws:
                        exhausted = True
                        ready.extend(job.finish())
                    else:
                        ready.extend(job.prepare(raws))
                    continue
                unit = ready.popleft()
                if isinstance(unit, Rejected):
                    yield job.reject(unit)
                else:
                    program = job.program(unit)
                    in_flight.add(pool.submit(_run_unit, program, execute, slots, cancel))
            if not in_flight:
                if exhausted and not ready:
                    return
                continue
            done, in_flight = wait(in_flight, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        # On Ctrl-C or an early exit, do not wait for requests in flight: they see ``cancel``
        # between socket reads and stop within a fraction of a second on their own.
        cancel.set()
        for future in in_flight:
            future.cancel()
