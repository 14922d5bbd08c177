"""The outcome streams a batch returns: ``BatchStream`` (sync) and ``AsyncBatchStream``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .._closing import Closing
from .flow import Outcome
from .jobs import Job
from .results import BatchResult
from .tasks import AsyncExecute, SourceFailed, run_tasks

__all__ = ["AsyncBatchStream", "BatchStream"]

T = TypeVar("T")


class _Outcomes(Generic[T]):
    """What both streams share: the buffer of finished outcomes, the progress, the result."""

    def __init__(self, job: Job[T]) -> None:
        self._job = job
        self._buffer: list[Outcome] = []
        self._finished = False

    def _take(self, chunk: list[Outcome]) -> None:
        self._job.progress.advance(len(chunk))
        self._buffer = chunk[::-1]

    def _end(self) -> None:
        self._finished = True
        self._job.progress.finish(self._job.state.accountant.total)

    def result(self) -> BatchResult[T]:
        """The accounting of the whole batch (values only for ``embed_batch``-style calls).

        Raises:
            RuntimeError: the stream was not consumed to the end.
        """
        if not self._finished:
            raise RuntimeError("iterate the batch to the end before asking for its result")
        return self._job.state.result()


class BatchStream(_Outcomes[T], Closing):
    """The outcomes of a batch, in the order they finish.

    Iterate it for ``(index, value)`` and ``(index, ItemFailure)`` pairs; after the last one,
    :meth:`result` gives the accounting. Use it as a context manager (or exhaust it): leaving
    early cancels what has not started and stops the workers.
    """

    def __init__(self, job: Job[T], chunks: Iterator[list[Outcome]]) -> None:
        super().__init__(job)
        self._chunks = chunks

    def __iter__(self) -> BatchStream[T]:
        return self

    def __next__(self) -> Outcome:
        while not self._buffer:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._end()
                raise
            self._take(chunk)
        return self._buffer.pop()

    def close(self) -> None:
        """Stop the batch: nothing more is sent; requests in flight are abandoned."""
        self._chunks.close()  # type: ignore[attr-defined]
        self._job.progress.close()

    def collect(self) -> BatchResult[T]:
        """Run the batch to the end and return its result."""
        with self:
            for _ in self:
                pass
            return self.result()


class AsyncBatchStream(_Outcomes[T]):
    """The outcomes of an async batch, in the order they finish.

    Use as ``async with client.iter_embed_batch(texts) as stream: async for index, outcome in
    stream: ...``; then :meth:`result` gives the accounting. The batch runs in a task group that
    lives exactly as long as the ``async with`` block: leaving it early cancels the rest.
    """

    def __init__(self, job: Job[T], source: Iterable[object], execute: AsyncExecute) -> None:
        super().__init__(job)
        self._source = source
        self._execute = execute
        self._task_group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[list[Outcome] | SourceFailed] | None = None

    async def __aenter__(self) -> AsyncBatchStream[T]:
        if self._task_group is not None:
            raise RuntimeError("a batch stream can be entered only once")
        # Unbuffered: a finished unit waits for the consumer, so memory stays bounded.
        send, self._receive = anyio.create_memory_object_stream[list[Outcome] | SourceFailed]()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(run_tasks, self._job, self._source, self._execute, send)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        assert self._receive is not None
        self._task_group.cancel_scope.cancel()  # a no-op when everything has finished
        self._receive.close()
        self._job.progress.close()
        if isinstance(exc, Exception):
            # An error of the block itself (the user's iterable broke, their loop body raised)
            # reaches the caller as it is, not wrapped in an ExceptionGroup of the workers.
            await self._task_group.__aexit__(None, None, None)
            return None
        return await self._task_group.__aexit__(exc_type, exc, traceback)

    def __aiter__(self) -> AsyncBatchStream[T]:
        return self

    async def __anext__(self) -> Outcome:
        if self._receive is None:
            raise RuntimeError("use the batch stream inside 'async with'")
        while not self._buffer:
            try:
                chunk = await self._receive.receive()
            except anyio.EndOfStream:
                self._end()
                raise StopAsyncIteration from None
            if isinstance(chunk, SourceFailed):
                raise chunk.error
            self._take(chunk)
        return self._buffer.pop()

    async def collect(self) -> BatchResult[T]:
        """Run the batch to the end and return its result."""
        async with self:
            async for _ in self:
                pass
        return self.result()
