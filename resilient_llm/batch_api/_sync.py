"""`BatchJob`: a Batch API job driven by a `ResilientClient` (blocking).

The job's logic is in its programs (`_engine`) and in `JobFront`; this driver only makes the
calls and waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import openai
from openai import OpenAI

from .._batch.results import BatchResult
from .._closing import Closing
from ._clients import JobClient
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

__all__ = ["BatchJob"]

R = TypeVar("R")


def _lookup(official: OpenAI, op: CreateBatch) -> Any:
    """The batch created for `op` by an attempt whose answer was lost, or ``None``."""
    after: str | None = None
    while True:
        found, after = op.search(official.batches.list(**list_kwargs(after)))
        if after is None:
            return found


class BatchJob(JobFront[JobClient]):
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

    _name = "BatchJob"
    _client_name = "ResilientClient"
    _client_closing = Closing
    _twin = "AsyncBatchJob with an AsyncResilientClient"

    # ------------------------------------------------------------------ making one

    @classmethod
    def embeddings(
        cls,
        client: JobClient,
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
        client = cls._checked(client)
        kind = embeddings_request(model or client.embedding_model, dimensions, params)
        return cls(client, JobCore.start(kind, texts, state, options))

    @classmethod
    def chat(
        cls,
        client: JobClient,
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
        client = cls._checked(client)
        kind = chat_request(model or client.chat_model, system, params)
        return cls(client, JobCore.start(kind, prompts, state, options))

    @classmethod
    def summaries(
        cls,
        client: JobClient,
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
        client = cls._checked(client)
        kind = summaries_request(model or client.chat_model, instructions, max_words)
        return cls(client, JobCore.start(kind, texts, state, options))

    @classmethod
    def open(
        cls, client: JobClient, state: StatePath, *, options: BatchJobOptions | None = None
    ) -> BatchJob:
        """Reopen the job saved in `state`, to collect, wait for or cancel it.

        Args:
            client: the client whose ``call()`` makes every API call.
            state: the job's state file.
            options: replaces the runtime options the job was made with (its limits stay).

        Raises:
            FileNotFoundError: no state file there.
        """
        return cls(cls._checked(client), JobCore.reopen(state, options))

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
            return self._drive(self._result())
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
        poll = self._poll(timeout)
        while True:
            try:
                progress = self._pass()
            except Exception as exc:
                if not poll.retry(exc):
                    raise
            else:
                if poll.finished(progress):
                    return self._drive(self._result())
            time.sleep(poll.pause())

    def run(self) -> BatchResult[Any]:
        """Submit and wait: the result of the whole job."""
        return self.wait()

    def cancel(self) -> JobProgress:
        """Cancel the job: running batches are cancelled, nothing more is sent.

        Lines that had not run become failures (never sent again); answers already in become
        values. `wait` or `collect` then return the result once the batches have stopped.
        """
        return self._drive(self._cancelling())

    # ------------------------------------------------------------------ driving

    def _pass(self) -> JobProgress:
        return self._drive(self._advance())

    def _drive(self, program: Program[R]) -> R:
        value: Any = None
        try:
            while True:
                finished, item = step(program, value)
                if finished:
                    return cast(R, item)
                value = self._execute(item)
        finally:
            program.close()

    def _execute(self, op: Op) -> Any:
        try:
            if isinstance(op, RunLive):
                return self._run_live(op)
            return self._send(op.request(self._core.options))
        except Exception as exc:
            raise_unsupported(exc, self._base_url(), op)
            raise

    def _send(self, request: SdkRequest) -> Any:
        try:
            return request.answer(self._client.call(self._sdk(request), **request.call_options()))
        except openai.BadRequestError:
            if request.ended_ok:
                return None
            raise

    def _sdk(self, request: SdkRequest) -> Callable[[OpenAI], Any]:
        attempts = 0

        def function(official: OpenAI) -> Any:
            nonlocal attempts
            attempts += 1
            if request.lookup is not None and attempts > 1:
                # An earlier attempt may have created it and lost the answer.
                found = _lookup(official, request.lookup)
                if found is not None:
                    return found
            return request.read(request.method(official)(*request.args, **request.kwargs))

        return request.named(function, "BatchJob")

    def _run_live(self, op: RunLive) -> BatchResult[Any]:
        client = self._client
        if op.kind == "embeddings":
            return client.embed_batch(op.inputs, model=op.model, **op.params)

        def chat(messages: Any) -> str:
            return completion_text(client.chat(messages, model=op.model, **op.params))

        return client.map(chat, op.inputs)
