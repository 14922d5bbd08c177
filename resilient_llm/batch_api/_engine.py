"""A Batch API job's logic, written once for both drivers.

Each public method returns a *program*: a generator that yields the calls to make (`_ops`),
receives their results, and returns a value. The programs hold the job's lock and do the
local disk work (state and shard files); the drivers do the network calls, with the client's
retries and deadline, and the waiting between passes.

One pass (`JobEngine.advance`) moves the job as far as it can without waiting:

1. the first pass of a process lists the batches (the probe: a server without a Batch API
   answers 404 here) and adopts those of its shards that were created by a process killed
   before it could write the batch id down;
2. retrieves every running batch;
3. collects every ended batch: downloads its output and error files, checks every answer,
   records each input's final outcome, and plans the lines worth sending again (429, 5xx,
   expired, cancelled by the system, answers that failed their checks) as a new shard, up to
   ``max_resubmits`` times;
4. uploads and creates batches for planned shards, at most ``max_in_flight`` running at once.

The state file is written after every step that changed something: a kill at any moment
leaves a state from which the next pass continues without creating any batch twice.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .._batch.results import BatchResult
from ._answers import Answer
from ._ended import Missing, batch_failure, read_shard
from ._ops import (
    JOB_KEY,
    LOOKUP_SKEW,
    SHARD_KEY,
    TRY_KEY,
    BatchInfo,
    Cancel,
    CreateBatch,
    ListBatches,
    Page,
    Program,
    Retrieve,
    Upload,
    matches,
)
from ._plan import filter_lines
from ._progress import JobProgress, progress_of
from ._result import Settled, job_result
from ._state import JobState, JobStore, Shard, to_ranges

__all__ = ["JobEngine"]

logger = logging.getLogger("resilient_llm")


class JobEngine:
    """The programs of one job, bound to its state file.

    Args:
        store: the job's files.
        options: runtime options (``max_resubmits``, ``max_in_flight``, ``fallback``).
    """

    def __init__(self, store: JobStore, options: dict[str, Any]) -> None:
        self.store = store
        self.options = options
        # Final answers of the shards this object collected, by shard: the result is assembled
        # from them without downloading the files again.
        self._settled: dict[int, Settled] = {}

    # ---------------------------------------------------------------- passes

    def advance(self, *, scan: bool) -> Program[JobProgress]:
        """One pass: (scan), refresh, collect, submit. Returns the progress after it."""
        with self.store.locked():
            state = self.store.load()
            if scan:
                yield from self._scan(state)
            yield from self._refresh(state)
            for shard in list(state.shards):
                if shard.stage == "done":
                    yield from self._collect(state, shard)
            if not state.cancelled:
                yield from self._submit(state)
            return progress_of(state)

    def progress(self) -> JobProgress:
        """The progress recorded in the state file (no network, no lock: writes are atomic)."""
        return progress_of(self.store.load())

    def cancel(self, *, scan: bool) -> Program[JobProgress]:
        """Cancel the job: running batches are cancelled, unsent shards fail, nothing is resent."""
        with self.store.locked():
            state = self.store.load()
            if scan:  # a batch created just before a kill is running too: find it first
                yield from self._scan(state)
            if not state.cancelled:
                state.cancelled = True
                self.store.save(state)  # first: a crash from here on resends nothing
            for shard in state.shards:
                if shard.stage in ("planned", "uploaded"):
                    shard.stage = "collected"
                    shard.never_sent = True
                    shard.failed = shard.size
                    self.store.save(state)
                elif shard.stage == "created" and shard.batch_id is not None:
                    cancelled: BatchInfo | None = yield Cancel(shard.batch_id)
                    if cancelled is not None:
                        self._record_info(shard, cancelled)
                        self.store.save(state)
            return progress_of(state)

    # ---------------------------------------------------------------- steps

    def _scan(self, state: JobState) -> Program[None]:
        """List batches: probe the Batch API, adopt batches created before a kill."""
        waiting = [shard for shard in state.shards if shard.stage == "uploaded"]
        found: dict[tuple[int, int], BatchInfo] = {}
        after: str | None = None
        while True:
            page: Page = yield ListBatches(after)
            for info in page.batches:
                if info.metadata.get(JOB_KEY) == state.job_id:
                    shard_tag = info.metadata.get(SHARD_KEY, "")
                    try_tag = info.metadata.get(TRY_KEY, "1")
                    if shard_tag.isdigit() and try_tag.isdigit():
                        found.setdefault((int(shard_tag), int(try_tag)), info)
            if (
                not waiting
                or not page.has_more
                or not page.batches
                or page.batches[-1].created_at < state.created_at - LOOKUP_SKEW
            ):
                break
            after = page.batches[-1].id
        for shard in waiting:
            adopted = found.get((shard.shard, shard.tries + 1))
            if adopted is not None:
                logger.info(
                    "batch job %s: shard %d already has batch %s (created before a restart); "
                    "adopting it",
                    state.job_id,
                    shard.shard,
                    adopted.id,
                )
                self._created(shard, adopted)
                self.store.save(state)

    def _refresh(self, state: JobState) -> Program[None]:
        for shard in state.shards:
            if shard.stage == "created" and shard.batch_id is not None:
                info: BatchInfo = yield Retrieve(shard.batch_id)
                if self._record_info(shard, info):
                    self.store.save(state)

    def _record_info(self, shard: Shard, info: BatchInfo) -> bool:
        before = (shard.batch_status, shard.stage)
        shard.batch_status = info.status
        shard.output_file_id = info.output_file_id
        shard.error_file_id = info.error_file_id
        shard.batch_errors = info.errors
        shard.input_tokens = info.input_tokens
        shard.total_tokens = info.total_tokens
        if info.terminal:
            shard.stage = "done"
        return (shard.batch_status, shard.stage) != before

    def _created(self, shard: Shard, info: BatchInfo) -> None:
        shard.tries += 1
        shard.sent_lines += shard.lines
        shard.batch_id = info.id
        shard.stage = "created"
        self._record_info(shard, info)

    def _in_flight_limit(self, state: JobState) -> float:
        limit = self.options.get("max_in_flight") or math.inf
        if state.in_flight_limit is not None:
            limit = min(limit, state.in_flight_limit)
        return float(limit)

    def _submit(self, state: JobState) -> Program[None]:
        limit = self._in_flight_limit(state)
        in_flight = sum(shard.stage == "created" for shard in state.shards)
        for shard in state.shards:
            if shard.stage not in ("planned", "uploaded"):
                continue
            if in_flight >= limit:
                return
            if shard.stage == "planned":
                file_id: str = yield Upload(
                    f"{state.job_id}-shard-{shard.shard:05d}.jsonl",
                    self.store.read_shard(shard.shard),
                )
                shard.file_id = file_id
                shard.stage = "uploaded"
                self.store.save(state)
            assert shard.file_id is not None
            attempt = shard.tries + 1
            metadata = {
                **self.options.get("metadata", {}),
                JOB_KEY: state.job_id,
                SHARD_KEY: str(shard.shard),
                TRY_KEY: str(attempt),
            }
            info: BatchInfo = yield CreateBatch(
                input_file_id=shard.file_id,
                endpoint=state.endpoint,
                metadata=metadata,
                job_id=state.job_id,
                shard=shard.shard,
                tries=attempt,
                not_before=state.created_at - LOOKUP_SKEW,
            )
            if not matches(info, state.job_id, shard.shard, attempt):
                logger.warning(
                    "batch job %s: batch %s came back without the metadata it was created with",
                    state.job_id,
                    info.id,
                )
            self._created(shard, info)
            self.store.save(state)
            in_flight += 1

    def _collect(self, state: JobState, shard: Shard) -> Program[None]:
        failure = batch_failure(self.store, state, shard, self.options["max_resubmits"])
        if failure is not None:
            answers, requeue = failure
            if requeue:
                shard.stage = "uploaded"
                shard.batch_id = None
                shard.batch_status = None
                self.store.save(state)
                return
        else:
            answers = yield from read_shard(state, shard)
        finals: list[Answer] = []
        missing: list[int] = []
        leftovers: list[int] = []
        absent = Missing(shard)
        rate_limited = expired = 0
        resend = not state.cancelled and shard.round < self.options["max_resubmits"]
        for index in shard.indices():
            answer = answers.get(index)
            if answer is None:
                missing.append(index)
                answer = absent(index)
            if answer.transient and resend and not (answer.cancelled and state.cancelled):
                leftovers.append(index)
                rate_limited += answer.rate_limited
                expired += answer.expired
            else:
                finals.append(answer)
        if missing and shard.batch_status == "completed":
            logger.warning(
                "batch job %s: batch %s completed without an answer for %d of its lines",
                state.job_id,
                shard.batch_id,
                len(missing),
            )
        if leftovers:
            data, order = filter_lines(self.store.read_shard(shard.shard), set(leftovers))
            number = max(s.shard for s in state.shards) + 1
            with self.store.shard_writer(number) as stream:
                stream.write(data)
            state.shards.append(
                Shard(
                    shard=number,
                    round=shard.round + 1,
                    ranges=to_ranges(order),
                    lines=data.count(b"\n"),
                    bytes=len(data),
                    rate_limited=rate_limited,
                    expired=expired,
                )
            )
            logger.warning(
                "batch job %s: shard %d: %d of %d inputs sent again as shard %d "
                "(%d rate-limited, %d expired)",
                state.job_id,
                shard.shard,
                len(leftovers),
                shard.size,
                number,
                rate_limited,
                expired,
            )
        shard.resubmitted = len(leftovers)
        shard.succeeded = sum(answer.error is None for answer in finals)
        shard.failed = len(finals) - shard.succeeded
        shard.stage = "collected"
        self.store.save(state)
        self._settled[shard.shard] = Settled(finals)

    # ---------------------------------------------------------------- the result

    def result(self) -> Program[BatchResult[Any]]:
        """Assemble the `BatchResult` of a finished job (re-reading shards collected elsewhere).

        Raises:
            RuntimeError: the job is not finished.
        """
        return job_result(self.store, self.options, self._settled)
