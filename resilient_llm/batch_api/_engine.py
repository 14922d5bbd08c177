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

import dataclasses
import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import BatchResult, BatchStats, InvalidInput, ItemFailure
from ._answers import Answer, Decoder, chat_decoder, embeddings_decoder, read_answers
from ._errors import BatchLineError
from ._internals import BatchAccountant
from ._ops import (
    JOB_KEY,
    LOOKUP_SKEW,
    SHARD_KEY,
    TRY_KEY,
    BatchInfo,
    Cancel,
    CreateBatch,
    Download,
    ListBatches,
    Op,
    Page,
    Retrieve,
    RunLive,
    Upload,
    matches,
)
from ._plan import filter_lines, line_inputs, line_ranges
from ._state import JobState, JobStore, Shard, to_ranges

__all__ = ["JobEngine", "JobProgress", "Program"]

logger = logging.getLogger("resilient_llm")

R = TypeVar("R")
Program = Generator[Op, Any, R]

# Batch errors that name a problem of the input file: sending the same lines again cannot help.
_PERMANENT_BATCH_ERRORS = frozenset(
    {
        "invalid_json_line",
        "duplicate_custom_id",
        "url_mismatch",
        "model_mismatch",
        "empty_file",
        "too_many_tasks",
        "missing_required_parameter",
        "invalid_method",
        "invalid_request",
        "file_not_found",
    }
)
_TOKEN_LIMIT = "token_limit_exceeded"


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where a Batch API job stands.

    Attributes:
        job_id: the job's id (metadata ``resilient_llm_job`` of its batches).
        total: inputs.
        done: inputs with a final outcome.
        succeeded: inputs with a value.
        failed: inputs with a final failure (inputs never sent included).
        shards: shards by stage and batch status, for example ``{"in_progress": 2,
            "collected": 1}`` (a running shard shows its batch's status).
        finished: every input has its final outcome: the result can be assembled.
        cancelled: the job was cancelled.
    """

    job_id: str
    total: int
    done: int
    succeeded: int
    failed: int
    shards: dict[str, int]
    finished: bool
    cancelled: bool


def progress_of(state: JobState) -> JobProgress:
    """The progress a state records."""
    shards: dict[str, int] = {}
    for shard in state.shards:
        key = shard.stage
        if shard.stage in ("created", "done") and shard.batch_status:
            key = shard.batch_status
        shards[key] = shards.get(key, 0) + 1
    succeeded = sum(s.succeeded for s in state.shards if s.stage == "collected")
    failed = len(state.rejected) + sum(s.failed for s in state.shards if s.stage == "collected")
    return JobProgress(
        job_id=state.job_id,
        total=state.total,
        done=succeeded + failed,
        succeeded=succeeded,
        failed=failed,
        shards=shards,
        finished=state.finished,
        cancelled=state.cancelled,
    )


@dataclass(frozen=True, slots=True)
class _Settled:
    """A collected shard's final answers (those not sent on to a later shard)."""

    finals: list[Answer]


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
        self._settled: dict[int, _Settled] = {}

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

    def _decoder(self, state: JobState) -> Decoder:
        if state.kind == "embeddings":
            return embeddings_decoder(state.request.get("dimensions"))
        return chat_decoder()

    def _read(self, state: JobState, shard: Shard) -> Program[dict[int, Answer]]:
        """Download and check a shard's answers (the last one per input wins)."""
        expected = set(shard.indices())
        decode = self._decoder(state)
        answers: dict[int, Answer] = {}
        for file_id in (shard.error_file_id, shard.output_file_id):
            if file_id is None:
                continue
            data: bytes = yield Download(file_id)
            for answer in read_answers(data, expected, decode, state.endpoint):
                answers[answer.index] = answer
        return answers

    def _batch_failure(
        self, state: JobState, shard: Shard
    ) -> tuple[dict[int, Answer], bool] | None:
        """Answers for a batch that ``failed`` as a whole; ``None`` if it did not.

        Returns:
            The answers, and whether the shard goes back to the queue as it is (the
            enqueued-token limit: it was refused for now, not for its content).
        """
        if shard.batch_status != "failed":
            return None
        errors = shard.batch_errors or [{"code": "failed", "message": "the batch failed"}]
        codes = {str(error.get("code")) for error in errors}
        line_ids = line_ranges(self.store.read_shard(shard.shard))
        described = "; ".join(
            f"{error.get('code')}: {error.get('message')}"
            + (f" (line {error['line']})" if error.get("line") else "")
            for error in errors[:3]
        )
        if _TOKEN_LIMIT in codes:
            others = sum(s.stage == "created" for s in state.shards if s is not shard)
            if others and shard.tries <= self.options["max_resubmits"]:
                state.in_flight_limit = max(1, others)
                logger.warning(
                    "batch job %s: shard %d refused (%s); at most %d batches in flight from now",
                    state.job_id,
                    shard.shard,
                    described,
                    state.in_flight_limit,
                )
                return {}, True
        lines = {
            int(error["line"])
            for error in errors
            if isinstance(error.get("line"), int) and 1 <= error["line"] <= len(line_ids)
        }
        code = sorted(codes)[0]
        bystander = BatchLineError(f"its batch failed on other lines ({described})", code=code)
        culprit = BatchLineError(f"the batch failed: {described}", code=code)
        permanent = bool(lines) or codes <= _PERMANENT_BATCH_ERRORS
        answers: dict[int, Answer] = {}
        for number, (first, count) in enumerate(line_ids, 1):
            for index in range(first, first + count):
                if lines and number not in lines:
                    answers[index] = Answer(index, error=bystander, transient=True)
                else:
                    answers[index] = Answer(index, error=culprit, transient=not permanent)
        return answers, False

    def _collect(self, state: JobState, shard: Shard) -> Program[None]:
        failure = self._batch_failure(state, shard)
        if failure is not None:
            answers, requeue = failure
            if requeue:
                shard.stage = "uploaded"
                shard.batch_id = None
                shard.batch_status = None
                self.store.save(state)
                return
        else:
            answers = yield from self._read(state, shard)
        finals: list[Answer] = []
        missing: list[int] = []
        leftovers: list[int] = []
        absent = _Missing(shard)
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
        self._settled[shard.shard] = _Settled(finals)

    # ---------------------------------------------------------------- the result

    def result(self) -> Program[BatchResult[Any]]:
        """Assemble the `BatchResult` of a finished job (re-reading shards collected elsewhere).

        Raises:
            RuntimeError: the job is not finished.
        """
        with self.store.locked():
            state = self.store.load()
        if not state.finished:
            raise RuntimeError(
                f"batch job {state.job_id} is not finished: {progress_of(state).shards}"
            )
        finals: dict[int, tuple[Answer, int, Shard]] = {}
        by_round = sorted(state.shards, key=lambda s: (s.round, s.shard))
        sent_later: set[int] = set()
        later_rounds: dict[int, set[int]] = {}
        for shard in reversed(by_round):
            later_rounds[shard.shard] = set(sent_later)
            if shard.round > 0:
                sent_later.update(shard.indices())
        for shard in by_round:
            attempts = shard.round + shard.tries
            if shard.never_sent:
                error = BatchLineError(
                    "the job was cancelled before it was sent", code="cancelled_by_user"
                )
                for index in shard.indices():
                    if index not in later_rounds[shard.shard]:
                        finals[index] = (Answer(index, error=error), shard.round, shard)
                continue
            settled = self._settled.get(shard.shard)
            if settled is None:
                settled = yield from self._reread(state, shard, later_rounds[shard.shard])
            for answer in settled.finals:
                finals[answer.index] = (answer, attempts, shard)
        fallback = None
        if self.options.get("fallback") and not state.cancelled:
            fallback = yield from self._fallback(state, finals)
        return self._assemble(state, finals, fallback)

    def _reread(self, state: JobState, shard: Shard, later: set[int]) -> Program[_Settled]:
        failure = self._batch_failure(state, shard)
        answers = failure[0] if failure is not None else (yield from self._read(state, shard))
        absent = _Missing(shard)
        finals = [
            answers.get(index) or absent(index) for index in shard.indices() if index not in later
        ]
        return _Settled(finals)

    def _fallback(
        self, state: JobState, finals: dict[int, tuple[Answer, int, Shard]]
    ) -> Program[tuple[list[int], BatchResult[Any]] | None]:
        leftovers = sorted(
            index
            for index, (answer, _, _) in finals.items()
            if answer.error is not None and (answer.transient or answer.shared)
        )
        if not leftovers:
            return None
        wanted = set(leftovers)
        inputs: dict[int, Any] = {}
        for shard in state.shards:
            if wanted.intersection(shard.indices()):
                inputs.update(line_inputs(self.store.read_shard(shard.shard), wanted))
        params = dict(state.request.get("params") or {})
        if state.kind == "embeddings" and state.request.get("dimensions") is not None:
            params["dimensions"] = state.request["dimensions"]
        logger.warning(
            "batch job %s: %d inputs left after the batches; running them live",
            state.job_id,
            len(leftovers),
        )
        result: BatchResult[Any] = yield RunLive(
            state.kind, [inputs[index] for index in leftovers], state.model, params
        )
        return leftovers, result

    def _assemble(
        self,
        state: JobState,
        finals: dict[int, tuple[Answer, int, Shard]],
        fallback: tuple[list[int], BatchResult[Any]] | None,
    ) -> BatchResult[Any]:
        accountant: BatchAccountant[Any] = BatchAccountant(keep_values=True)
        accountant.expect(state.total)
        live: dict[int, int] = {}
        if fallback is not None:
            live = {index: position for position, index in enumerate(fallback[0])}
        replaced: dict[int, ItemFailure] = {}
        live_failures = {f.index: f for f in fallback[1].failures} if fallback else {}
        previews = self._previews(state, finals)
        for record in state.rejected:
            accountant.failure(
                record["index"], InvalidInput(record["message"]), attempts=0, item=record["item"]
            )
        for index, (answer, attempts, _) in sorted(finals.items()):
            if fallback is not None and index in live:
                position, outcome = live[index], fallback[1]
                failure = live_failures.get(position)
                if failure is None:
                    accountant.success(index, outcome.values[position])
                    continue
                replaced[index] = dataclasses.replace(
                    failure, index=index, attempts=failure.attempts + attempts
                )
            if answer.error is None:
                accountant.success(index, answer.value)
            else:
                assert answer.error is not None
                accountant.failure(
                    index, answer.error, attempts=attempts, item=previews.get(index, "")
                )
        result = accountant.result(max(0.0, time.time() - state.created_at))
        # The Batch API's own counts: lines are its requests; inputs sent again are retries.
        sent = [s for s in state.shards if s.tries]
        requeued = sum(s.size * (s.tries - 1) for s in sent)  # refused for the token limit
        counts = {
            "requests": sum(s.sent_lines for s in sent),
            "retries": requeued + sum(s.size for s in sent if s.round),
            "rate_limited": sum(s.rate_limited for s in state.shards) + requeued,
            "timeouts": sum(s.expired for s in state.shards),
            "prompt_tokens": sum(s.input_tokens for s in state.shards),
            "total_tokens": sum(s.total_tokens for s in state.shards),
        }
        if fallback is not None:
            extra = fallback[1].stats
            for name in counts:
                counts[name] += getattr(extra, name)
            counts["bisections"] = result.stats.bisections + extra.bisections
        stats: BatchStats = dataclasses.replace(result.stats, **counts)
        failures = [replaced.get(f.index, f) for f in result.failures]
        return BatchResult(values=result.values, failures=failures, stats=stats)

    def _previews(
        self, state: JobState, finals: dict[int, tuple[Answer, int, Shard]]
    ) -> dict[int, Any]:
        """The inputs of failed lines, read back from the shard files, for failure previews."""
        wanted_by_shard: dict[int, set[int]] = {}
        for index, (answer, _, shard) in finals.items():
            if answer.error is not None:
                wanted_by_shard.setdefault(shard.shard, set()).add(index)
        previews: dict[int, Any] = {}
        for number, wanted in wanted_by_shard.items():
            for index, value in line_inputs(self.store.read_shard(number), wanted).items():
                if isinstance(value, list) and value and isinstance(value[-1], dict):
                    value = value[-1].get("content", value)
                previews[index] = value
        return previews


class _Missing:
    """Answers for lines in neither file of their ended batch: one shared error per batch.

    Sharing it lets the accountant log the traceback once, not once per line.
    """

    def __init__(self, shard: Shard) -> None:
        status = shard.batch_status
        self.expired = status == "expired"
        self.cancelled = status == "cancelled"
        if self.expired:
            message, code = "the batch expired before the line ran", "batch_expired"
        elif self.cancelled:
            message, code = "the batch was cancelled before the line ran", "batch_cancelled"
        else:
            message = f"batch {shard.batch_id} ({status}) has no answer for it"
            code = "no_answer"
        self.error = BatchLineError(f"{code}: {message}", code=code)

    def __call__(self, index: int) -> Answer:
        return Answer(
            index,
            error=self.error,
            transient=True,
            expired=self.expired,
            cancelled=self.cancelled,
        )
