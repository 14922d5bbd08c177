"""`AsyncBatchJob`: a Batch API job driven by an `AsyncResilientClient` (anyio: asyncio, trio).

The twin of `BatchJob`: the same programs (`_engine`) and `JobFront`, driven with ``await``. The
programs' steps (planning, reading answers, writing the state) run in a worker thread, off the
event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
import openai
from openai import AsyncOpenAI

from .._batch.results import BatchResult
from .._closing import AsyncClosing
from ._clients import AsyncJobClient
from ._front import JobFront
from ._internals import completion_text
from ._job import JobCore, StatePath, chat_request, embeddings_request, summaries_request
from ._ops import (
    CreateBatch,
    Op,
    Program,
    RunLive,
    SdkRequest,
    list_kwargs,
    raise_unsupported,
    step,
)
from ._options import BatchJobOptions
from ._progress import JobProgress

__all__ = ["AsyncBatchJob"]

R = TypeVar("R")


async def _lookup(official: AsyncOpenAI, op: CreateBatch) -> Any:
    """The batch created for `op` by an attempt whose answer was lost, or ``None``."""
    after: str | None = None
    while True:
        found, after = op.search(await official.batches.list(**list_kwargs(after)))
        if after is None:
            return found


class AsyncBatchJob(JobFront[AsyncJobClient]):
    """The async twin of `BatchJob`: the same job, driven by an `AsyncResilientClient`.

    Make one with ``await AsyncBatchJob.embeddings(...)``, ``chat``, ``summaries`` or
    ``open``; then ``await job.run()``, or ``await job.submit()`` now and ``await
    job.collect()`` later. Runs on asyncio and trio; cancelling the task that waits leaves the
    batches running and the state file consistent (resume with `open`).
    """

    _name = "AsyncBatchJob"
    _client_name = "AsyncResilientClient"
    _client_closing = AsyncClosing
    _twin = "BatchJob with a ResilientClient"

    # ------------------------------------------------------------------ making one

    @classmethod
    async def embeddings(
        cls,
        client: AsyncJobClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        model: str | None = None,
        dimensions: int | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> AsyncBatchJob:
        """A job embedding `texts`; see `BatchJob.embeddings`."""
        client = cls._checked(client)
        kind = embeddings_request(model or client.embedding_model, dimensions, params)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, texts, state, options)
        return cls(client, core)

    @classmethod
    async def chat(
        cls,
        client: AsyncJobClient,
        prompts: Iterable[str | Sequence[Any]],
        *,
        state: StatePath,
        system: str | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> AsyncBatchJob:
        """A job of one chat completion per prompt; see `BatchJob.chat`."""
        client = cls._checked(client)
        kind = chat_request(model or client.chat_model, system, params)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, prompts, state, options)
        return cls(client, core)

    @classmethod
    async def summaries(
        cls,
        client: AsyncJobClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
    ) -> AsyncBatchJob:
        """A job summarising each text; see `BatchJob.summaries`."""
        client = cls._checked(client)
        kind = summaries_request(model or client.chat_model, instructions, max_words)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, texts, state, options)
        return cls(client, core)

    @classmethod
    async def open(
        cls,
        client: AsyncJobClient,
        state: StatePath,
        *,
        options: BatchJobOptions | None = None,
    ) -> AsyncBatchJob:
        """Reopen the job saved in `state`; see `BatchJob.open`."""
        client = cls._checked(client)
        core = await anyio.to_thread.run_sync(JobCore.reopen, state, options)
        return cls(client, core)

    # ------------------------------------------------------------------ acting

    async def progress(self) -> JobProgress:
        """Where the job stands, from its state file (no network)."""
        return await anyio.to_thread.run_sync(self._core.engine.progress)

    async def submit(self) -> JobProgress:
        """Upload and create what can be, collect what ended; see `BatchJob.submit`."""
        return await self._pass()

    async def collect(self) -> BatchResult[Any] | None:
        """One pass; the result if the job is finished, else ``None``."""
        if (await self._pass()).finished:
            return await self._drive(self._result())
        return None

    # `timeout` (not a cancel scope) so that giving up never cuts a pass short: the state
    # stays at its last step either way, but a clean stop is easier to reason about.
    async def wait(self, *, timeout: float | None = None) -> BatchResult[Any]:  # noqa: ASYNC109
        """Submit, then wait until every input has its final outcome; see `BatchJob.wait`."""
        poll = self._poll(timeout)
        while True:
            try:
                progress = await self._pass()
            except Exception as exc:
                if not poll.retry(exc):
                    raise
            else:
                if poll.finished(progress):
                    return await self._drive(self._result())
            await anyio.sleep(poll.pause())

    async def run(self) -> BatchResult[Any]:
        """Submit and wait: the result of the whole job."""
        return await self.wait()

    async def cancel(self) -> JobProgress:
        """Cancel the job; see `BatchJob.cancel`."""
        return await self._drive(self._cancelling())

    # ------------------------------------------------------------------ driving

    async def _pass(self) -> JobProgress:
        return await self._drive(self._advance())

    async def _drive(self, program: Program[R]) -> R:
        value: Any = None
        try:
            while True:
                finished, item = await anyio.to_thread.run_sync(step, program, value)
                if finished:
                    return cast(R, item)
                value = await self._execute(item)
        finally:
            program.close()

    async def _execute(self, op: Op) -> Any:
        try:
            if isinstance(op, RunLive):
                return await self._run_live(op)
            return await self._send(op.request(self._core.options))
        except Exception as exc:
            raise_unsupported(exc, self._base_url(), op)
            raise

    async def _send(self, request: SdkRequest) -> Any:
        try:
            call = self._client.call
            return request.answer(await call(self._sdk(request), **request.call_options()))
        except openai.BadRequestError:
            if request.ended_ok:
                return None
            raise

    def _sdk(self, request: SdkRequest) -> Callable[[AsyncOpenAI], Any]:
        attempts = 0

        async def function(official: AsyncOpenAI) -> Any:
            nonlocal attempts
            attempts += 1
            if request.lookup is not None and attempts > 1:
                # An earlier attempt may have created it and lost the answer.
                found = await _lookup(official, request.lookup)
                if found is not None:
                    return found
            return request.read(await request.method(official)(*request.args, **request.kwargs))

        return request.named(function, "AsyncBatchJob")

    async def _run_live(self, op: RunLive) -> BatchResult[Any]:
        client = self._client
        if op.kind == "embeddings":
            return await client.embed_batch(op.inputs, model=op.model, **op.params)

        async def chat(messages: Any) -> str:
            return completion_text(await client.chat(messages, model=op.model, **op.params))

        return await client.map(chat, op.inputs)
