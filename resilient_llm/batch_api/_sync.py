"""`BatchJob`: a Batch API job driven by a `ResilientClient` (blocking)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar, cast

import openai
from openai import OpenAI

from .. import BatchResult, ResilientClient
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

__all__ = ["BatchJob"]

logger = logging.getLogger("resilient_llm")

R = TypeVar("R")
StatePath = str | os.PathLike[str]


def _check_client(client: object) -> ResilientClient:
    if not isinstance(client, ResilientClient):
        hint = " (use AsyncBatchJob with an AsyncResilientClient)" if client is not None else ""
        raise TypeError(f"client must be a ResilientClient, not {type(client).__name__}{hint}")
    return client


def _list_kwargs(after: str | None) -> dict[str, Any]:
    return {"limit": 100, "after": after} if after else {"limit": 100}


def _lookup(official: OpenAI, op: CreateBatch) -> Any:
    """The batch created for `op` by an attempt whose answer was lost, or ``None``."""
    after: str | None = None
    while True:
        page = official.batches.list(**_list_kwargs(after))
        for batch in page.data:
            if matches(batch_info(batch), op.job_id, op.shard, op.tries):
                return batch
        if not page.has_more or not page.data or page.data[-1].created_at < op.not_before:
            return None
        after = page.data[-1].id


class BatchJob:
    """A job over any number of inputs through OpenAI's Batch API, resumable after a crash.

    Half the price of live calls and its own rate pool, with the accounting of
    ``client.embed_batch``: the result is a ``BatchResult`` where every input is a value or an
    ``ItemFailure``, exactly once. The job's state lives in a file (written atomically); a
    process killed at any moment resumes it, in this process or another, without creating any
    batch twice.

    Make one with `embeddings`, `chat` or `summaries` (calling it again with the same inputs
    and state path resumes the job), or reopen one with `open`. Then either wait for it
    (`run` / `wait`), or `submit` now and `collect` later, from any process.

    Every API call goes through ``client.call``: it has the client's retries and deadline.
    Waiting for the batches is not bounded by that deadline (batches take up to 24 h).

    Example:
        >>> job = BatchJob.embeddings(client, texts, state="ingest.json")  # doctest: +SKIP
        >>> result = job.run()  # or job.submit(); later BatchJob.open(client, ...).collect()
    """

    def __init__(self, client: ResilientClient, core: JobCore) -> None:
        self._client = client
        self._core = core
        self._scanned = False

    # ------------------------------------------------------------------ making one

    @classmethod
    def embeddings(
        cls,
        client: ResilientClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        model: str | None = None,
        dimensions: int | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> BatchJob:
        """A job embedding `texts` (one input per request line).

        Reads `texts` once and writes the request files next to the state file; nothing is
        sent before `submit`, `run` or `wait`.

        Args:
            client: the client whose ``call()`` makes every API call.
            texts: any iterable of strings; non-strings and blank strings fail alone.
            state: the state file; if it exists and holds this same job, the job resumes.
            model: defaults to the client's ``embedding_model``.
            dimensions: vector length (every answer is checked against it).
            options: splitting, resubmission, polling and fallback options.
            **params: more fields of the embeddings request (``user``...).

        Raises:
            ValueError: `state` holds another job.
        """
        client = _check_client(client)
        kind = embeddings_request(model or client.embedding_model, dimensions, params)
        return cls(client, JobCore.start(kind, texts, state, options))

    @classmethod
    def chat(
        cls,
        client: ResilientClient,
        prompts: Iterable[str | Sequence[Any]],
        *,
        state: StatePath,
        system: str | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
        **params: Any,
    ) -> BatchJob:
        """A job of one chat completion per prompt; each value is the reply's text.

        Args:
            client: the client whose ``call()`` makes every API call.
            prompts: strings (user messages, after `system` if given) or lists of messages.
            state: the state file; if it exists and holds this same job, the job resumes.
            system: a system message before each string prompt.
            model: defaults to the client's ``chat_model``.
            options: splitting, resubmission, polling and fallback options.
            **params: more fields of the request (``temperature``, ``max_tokens``...).
        """
        client = _check_client(client)
        kind = chat_request(model or client.chat_model, system, params)
        return cls(client, JobCore.start(kind, prompts, state, options))

    @classmethod
    def summaries(
        cls,
        client: ResilientClient,
        texts: Iterable[object],
        *,
        state: StatePath,
        instructions: str | None = None,
        max_words: int | None = None,
        model: str | None = None,
        options: BatchJobOptions | None = None,
    ) -> BatchJob:
        """A job summarising each text with the messages of ``client.summarize``.

        Texts longer than the model's context fail alone (no map-reduce in a batch).
        """
        client = _check_client(client)
        kind = summaries_request(model or client.chat_model, instructions, max_words)
        return cls(client, JobCore.start(kind, texts, state, options))

    @classmethod
    def open(
        cls, client: ResilientClient, state: StatePath, *, options: BatchJobOptions | None = None
    ) -> BatchJob:
        """Reopen the job saved in `state`, to collect, wait for or cancel it.

        Args:
            client: the client whose ``call()`` makes every API call.
            state: the job's state file.
            options: replaces the runtime options the job was made with (its limits stay).

        Raises:
            FileNotFoundError: no state file there.
        """
        return cls(_check_client(client), JobCore.reopen(state, options))

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
        return f"BatchJob(id={self.id!r}, kind={self.kind!r}, state={self.state_path!r})"

    # ------------------------------------------------------------------ acting

    def progress(self) -> JobProgress:
        """Where the job stands, from its state file (no network)."""
        return self._core.engine.progress()

    def submit(self) -> JobProgress:
        """Upload and create what can be (within ``max_in_flight``), collect what ended.

        Returns at once; the batches run on the server. Call it (or `collect`) again later to
        go on; every call is one pass over the job.
        """
        return self._pass()

    def collect(self) -> BatchResult[Any] | None:
        """One pass (like `submit`); the result if the job is finished, else ``None``."""
        if self._pass().finished:
            return self._drive(self._core.engine.result())
        return None

    def wait(self, *, timeout: float | None = None) -> BatchResult[Any]:
        """Submit, then wait until every input has its final outcome; the result.

        Failed looks at the batches (network down, 5xx) are logged and tried again at the
        next poll, up to ``max_poll_errors`` in a row.

        Args:
            timeout: give up waiting after this many seconds (the batches keep running).

        Raises:
            TimeoutError: `timeout` passed first.
            BatchAPIUnsupported: the server has no Batch API.
        """
        started = time.monotonic()
        interval = self._core.options.poll_interval
        failures = 0
        done = -1
        while True:
            try:
                progress = self._pass()
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
                    return self._drive(self._core.engine.result())
                interval = self._core.next_interval(interval, progress.done != done)
                done = progress.done
            if self._core.timed_out(started, timeout):
                raise self._core.timeout_error(cast(float, timeout))
            time.sleep(interval)

    def run(self) -> BatchResult[Any]:
        """Submit and wait: the result of the whole job."""
        return self.wait()

    def cancel(self) -> JobProgress:
        """Cancel the job: running batches are cancelled, nothing more is sent.

        Lines that had not run become failures (never sent again); answers already in become
        values. `wait` or `collect` then return the result once the batches have stopped.
        """
        scan = not self._scanned
        progress = self._drive(self._core.engine.cancel(scan=scan))
        self._scanned = True
        return progress

    # ------------------------------------------------------------------ driving

    def _pass(self) -> JobProgress:
        progress = self._drive(self._core.engine.advance(scan=not self._scanned))
        self._scanned = True
        return progress

    def _drive(self, program: Program[R]) -> R:
        value: Any = None
        try:
            while True:
                try:
                    op = program.send(value)
                except StopIteration as stop:
                    return cast(R, stop.value)
                value = self._execute(op)
        finally:
            program.close()

    def _base_url(self) -> str:
        return str(self._client.openai.base_url)

    def _execute(self, op: Op) -> Any:
        try:
            return self._dispatch(op)
        except Exception as exc:
            translated = unsupported(exc, self._base_url(), op)
            if translated is exc:
                raise
            raise translated from exc

    def _deadline(self, value: float | None) -> dict[str, float]:
        return {} if value is None else {"deadline": value}

    def _dispatch(self, op: Op) -> Any:
        call = self._client.call
        options = self._core.options
        if isinstance(op, Retrieve):

            def batches_retrieve(official: OpenAI) -> Any:
                return official.batches.retrieve(op.batch_id)

            return batch_info(call(batches_retrieve))
        if isinstance(op, ListBatches):

            def batches_list(official: OpenAI) -> Page:
                page = official.batches.list(**_list_kwargs(op.after))
                return Page([batch_info(b) for b in page.data], bool(page.has_more))

            return call(batches_list)
        if isinstance(op, Upload):

            def files_create(official: OpenAI) -> str:
                made = official.files.create(
                    file=(op.filename, op.data, "application/jsonl"), purpose="batch"
                )
                return made.id

            return call(files_create, **self._deadline(options.upload_deadline))
        if isinstance(op, CreateBatch):
            return batch_info(call(self._creator(op)))
        if isinstance(op, Download):

            def files_content(official: OpenAI) -> bytes:
                return bytes(official.files.content(op.file_id).content)

            return call(files_content, **self._deadline(options.download_deadline))
        if isinstance(op, Cancel):

            def batches_cancel(official: OpenAI) -> Any:
                return official.batches.cancel(op.batch_id)

            try:
                return batch_info(call(batches_cancel))
            except openai.BadRequestError:
                return None  # it ended before the cancel arrived: the next look collects it
        assert isinstance(op, RunLive)
        return self._run_live(op)

    @staticmethod
    def _creator(op: CreateBatch) -> Any:
        attempts = 0

        def batches_create(official: OpenAI) -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # an earlier attempt may have created it and lost the answer
                found = _lookup(official, op)
                if found is not None:
                    return found
            return official.batches.create(
                input_file_id=op.input_file_id,
                endpoint=cast(Any, op.endpoint),
                completion_window="24h",
                metadata=op.metadata,
            )

        return batches_create

    def _run_live(self, op: RunLive) -> BatchResult[Any]:
        client = self._client
        if op.kind == "embeddings":
            return client.embed_batch(op.inputs, model=op.model, **op.params)

        def chat(messages: Any) -> str:
            return completion_text(client.chat(messages, model=op.model, **op.params))

        return client.map(chat, op.inputs)
