"""`AsyncBatchJob`: a Batch API job driven by an `AsyncResilientClient` (anyio: asyncio, trio).

The twin of `BatchJob`: the same programs (`_engine`), driven with ``await``. The programs' steps
(planning, reading answers, writing the state) run in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
import openai
from openai import AsyncOpenAI

from .. import AsyncResilientClient, BatchResult
from ._engine import JobProgress, Program
from ._internals import completion_text
from ._job import JobCore, chat_request, embeddings_request, is_transient, summaries_request
from ._ops import (
    Cancel,
    CreateBatch,
    Download,
    ListBatches,
    Op,
    Page,
    Retrieve,
    RunLive,
    Upload,
    batch_info,
    matches,
    unsupported,
)
from ._options import BatchJobOptions

__all__ = ["AsyncBatchJob"]

logger = logging.getLogger("resilient_llm")

R = TypeVar("R")
StatePath = str | os.PathLike[str]


def _check_client(client: object) -> AsyncResilientClient:
    if not isinstance(client, AsyncResilientClient):
        hint = " (use BatchJob with a ResilientClient)" if client is not None else ""
        raise TypeError(
            f"client must be an AsyncResilientClient, not {type(client).__name__}{hint}"
        )
    return client


def _list_kwargs(after: str | None) -> dict[str, Any]:
    return {"limit": 100, "after": after} if after else {"limit": 100}


async def _lookup(official: AsyncOpenAI, op: CreateBatch) -> Any:
    """The batch created for `op` by an attempt whose answer was lost, or ``None``."""
    after: str | None = None
    while True:
        page = await official.batches.list(**_list_kwargs(after))
        for batch in page.data:
            if matches(batch_info(batch), op.job_id, op.shard, op.tries):
                return batch
        if not page.has_more or not page.data or page.data[-1].created_at < op.not_before:
            return None
        after = page.data[-1].id


def _step(program: Program[Any], value: Any) -> tuple[bool, Any]:
    """Run the program to its next call (in a worker thread): ``(finished, op or result)``."""
    try:
        return False, program.send(value)
    except StopIteration as stop:
        return True, stop.value


class AsyncBatchJob:
    """The async twin of `BatchJob`: the same job, driven by an `AsyncResilientClient`.

    Make one with ``await AsyncBatchJob.embeddings(...)``, ``chat``, ``summaries`` or
    ``open``; then ``await job.run()``, or ``await job.submit()`` now and ``await
    job.collect()`` later. Runs on asyncio and trio; cancelling the task that waits leaves the
    batches running and the state file consistent (resume with `open`).
    """

    def __init__(self, client: AsyncResilientClient, core: JobCore) -> None:
        self._client = client
        self._core = core
        self._scanned = False

    # ------------------------------------------------------------------ making one

    @classmethod
    async def embeddings(
        cls,
        client: AsyncResilientClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        model: str | None = None,
        dimensions: int | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> AsyncBatchJob:
        """A job embedding `texts`; see `BatchJob.embeddings`."""
        client = _check_client(client)
        kind = embeddings_request(model or client.embedding_model, dimensions, params)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, texts, state, options)
        return cls(client, core)

    @classmethod
    async def chat(
        cls,
        client: AsyncResilientClient,
        prompts: Iterable[str | Sequence[Any]],
        *,
        state: StatePath,
        system: str | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> AsyncBatchJob:
        """A job of one chat completion per prompt; see `BatchJob.chat`."""
        client = _check_client(client)
        kind = chat_request(model or client.chat_model, system, params)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, prompts, state, options)
        return cls(client, core)

    @classmethod
    async def summaries(
        cls,
        client: AsyncResilientClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
    ) -> AsyncBatchJob:
        """A job summarising each text; see `BatchJob.summaries`."""
        client = _check_client(client)
        kind = summaries_request(model or client.chat_model, instructions, max_words)
        core = await anyio.to_thread.run_sync(JobCore.start, kind, texts, state, options)
        return cls(client, core)

    @classmethod
    async def open(
        cls,
        client: AsyncResilientClient,
        state: StatePath,
        *,
        options: BatchJobOptions | None = None,
    ) -> AsyncBatchJob:
        """Reopen the job saved in `state`; see `BatchJob.open`."""
        client = _check_client(client)
        core = await anyio.to_thread.run_sync(JobCore.reopen, state, options)
        return cls(client, core)

    # ------------------------------------------------------------------ facts

    @property
    def id(self) -> str:
        """The job's id: the ``resilient_llm_job`` metadata of its batches."""
        return self._core.job_id

    @property
    def state_path(self) -> str:
        """The state file."""
        return str(self._core.store.path)

    @property
    def kind(self) -> str:
        """``"embeddings"`` or ``"chat"``."""
        return self._core.kind

    def __repr__(self) -> str:
        return f"AsyncBatchJob(id={self.id!r}, kind={self.kind!r}, state={self.state_path!r})"

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
            return await self._drive(self._core.engine.result())
        return None

    # `timeout` (not a cancel scope) so that giving up never cuts a pass short: the state
    # stays at its last step either way, but a clean stop is easier to reason about.
    async def wait(self, *, timeout: float | None = None) -> BatchResult[Any]:  # noqa: ASYNC109
        """Submit, then wait until every input has its final outcome; see `BatchJob.wait`."""
        started = time.monotonic()
        interval = self._core.options.poll_interval
        failures = 0
        done = -1
        while True:
            try:
                progress = await self._pass()
            except Exception as exc:
                failures += 1
                if not is_transient(exc) or failures >= self._core.options.max_poll_errors:
                    raise
                logger.warning(
                    "batch job %s: looking at the batches failed (%s: %s); trying again in %.0f s",
                    self.id,
                    type(exc).__name__,
                    exc,
                    interval,
                )
            else:
                failures = 0
                if progress.finished:
                    return await self._drive(self._core.engine.result())
                interval = self._core.next_interval(interval, progress.done != done)
                done = progress.done
            if self._core.timed_out(started, timeout):
                raise self._core.timeout_error(cast(float, timeout))
            await anyio.sleep(interval)

    async def run(self) -> BatchResult[Any]:
        """Submit and wait: the result of the whole job."""
        return await self.wait()

    async def cancel(self) -> JobProgress:
        """Cancel the job; see `BatchJob.cancel`."""
        progress = await self._drive(self._core.engine.cancel(scan=not self._scanned))
        self._scanned = True
        return progress

    # ------------------------------------------------------------------ driving

    async def _pass(self) -> JobProgress:
        progress = await self._drive(self._core.engine.advance(scan=not self._scanned))
        self._scanned = True
        return progress

    async def _drive(self, program: Program[R]) -> R:
        value: Any = None
        try:
            while True:
                finished, item = await anyio.to_thread.run_sync(_step, program, value)
                if finished:
                    return cast(R, item)
                value = await self._execute(item)
        finally:
            program.close()

    def _base_url(self) -> str:
        return str(self._client.openai.base_url)

    async def _execute(self, op: Op) -> Any:
        try:
            return await self._dispatch(op)
        except Exception as exc:
            translated = unsupported(exc, self._base_url(), op)
            if translated is exc:
                raise
            raise translated from exc

    def _deadline(self, value: float | None) -> dict[str, float]:
        return {} if value is None else {"deadline": value}

    async def _dispatch(self, op: Op) -> Any:
        call = self._client.call
        options = self._core.options
        if isinstance(op, Retrieve):

            async def batches_retrieve(official: AsyncOpenAI) -> Any:
                return await official.batches.retrieve(op.batch_id)

            return batch_info(await call(batches_retrieve))
        if isinstance(op, ListBatches):

            async def batches_list(official: AsyncOpenAI) -> Page:
                page = await official.batches.list(**_list_kwargs(op.after))
                return Page([batch_info(b) for b in page.data], bool(page.has_more))

            return await call(batches_list)
        if isinstance(op, Upload):

            async def files_create(official: AsyncOpenAI) -> str:
                made = await official.files.create(
                    file=(op.filename, op.data, "application/jsonl"), purpose="batch"
                )
                return made.id

            return await call(files_create, **self._deadline(options.upload_deadline))
        if isinstance(op, CreateBatch):
            return batch_info(await call(self._creator(op)))
        if isinstance(op, Download):

            async def files_content(official: AsyncOpenAI) -> bytes:
                return bytes((await official.files.content(op.file_id)).content)

            return await call(files_content, **self._deadline(options.download_deadline))
        if isinstance(op, Cancel):

            async def batches_cancel(official: AsyncOpenAI) -> Any:
                return await official.batches.cancel(op.batch_id)

            try:
                return batch_info(await call(batches_cancel))
            except openai.BadRequestError:
                return None  # it ended before the cancel arrived: the next look collects it
        assert isinstance(op, RunLive)
        return await self._run_live(op)

    @staticmethod
    def _creator(op: CreateBatch) -> Any:
        attempts = 0

        async def batches_create(official: AsyncOpenAI) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # an earlier attempt may have created it and lost the answer
                found = await _lookup(official, op)
                if found is not None:
                    return found
            return await official.batches.create(
                input_file_id=op.input_file_id,
                endpoint=cast(Any, op.endpoint),
                completion_window="24h",
                metadata=op.metadata,
            )

        return batches_create

    async def _run_live(self, op: RunLive) -> BatchResult[Any]:
        client = self._client
        if op.kind == "embeddings":
            return await client.embed_batch(op.inputs, model=op.model, **op.params)

        async def chat(messages: Any) -> str:
            return completion_text(await client.chat(messages, model=op.model, **op.params))

        return await client.map(chat, op.inputs)
