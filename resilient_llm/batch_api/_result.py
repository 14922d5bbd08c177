"""A finished job's `BatchResult`: every input's final answer, the live fallback, the counts.

The program `job_result` assembles it from the answers of the shards collected in this process
(`Settled`) and re-reads the others (collected by another process) from their files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._batch.results import BatchResult, BatchStats, ItemFailure
from .._exceptions import InvalidInput
from ._answers import Answer
from ._ended import Missing, batch_failure, read_shard
from ._errors import BatchLineError
from ._internals import BatchAccountant
from ._ops import Program, RunLive
from ._plan import line_inputs
from ._progress import progress_of
from ._state import JobState, JobStore, Shard

__all__ = ["Settled", "job_result"]

logger = logging.getLogger("resilient_llm")

#: Each input's final answer, the attempts it took, and its shard.
Finals = dict[int, tuple[Answer, int, Shard]]
#: The inputs run live after the batches, and their result.
Fallback = tuple[list[int], BatchResult[Any]]


@dataclass(frozen=True, slots=True)
class Settled:
    """A collected shard's final answers (those not sent on to a later shard)."""

    finals: list[Answer]


def job_result(
    store: JobStore, options: Mapping[str, Any], settled: Mapping[int, Settled]
) -> Program[BatchResult[Any]]:
    """Assemble the `BatchResult` of a finished job (re-reading shards collected elsewhere).

    Raises:
        RuntimeError: the job is not finished.
    """
    with store.locked():
        state = store.load()
    if not state.finished:
        raise RuntimeError(f"batch job {state.job_id} is not finished: {progress_of(state).shards}")
    finals: Finals = {}
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
        done = settled.get(shard.shard)
        if done is None:
            done = yield from _reread(store, options, state, shard, later_rounds[shard.shard])
        for answer in done.finals:
            finals[answer.index] = (answer, attempts, shard)
    fallback = None
    if options.get("fallback") and not state.cancelled:
        fallback = yield from _fallback(store, state, finals)
    return _assemble(store, state, finals, fallback)


def _reread(
    store: JobStore, options: Mapping[str, Any], state: JobState, shard: Shard, later: set[int]
) -> Program[Settled]:
    failure = batch_failure(store, state, shard, options["max_resubmits"])
    answers = failure[0] if failure is not None else (yield from read_shard(state, shard))
    absent = Missing(shard)
    finals = [
        answers.get(index) or absent(index) for index in shard.indices() if index not in later
    ]
    return Settled(finals)


def _fallback(store: JobStore, state: JobState, finals: Finals) -> Program[Fallback | None]:
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
            inputs.update(line_inputs(store.read_shard(shard.shard), wanted))
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
    store: JobStore, state: JobState, finals: Finals, fallback: Fallback | None
) -> BatchResult[Any]:
    accountant: BatchAccountant[Any] = BatchAccountant(keep_values=True)
    accountant.expect(state.total)
    live: dict[int, int] = {}
    if fallback is not None:
        live = {index: position for position, index in enumerate(fallback[0])}
    replaced: dict[int, ItemFailure] = {}
    live_failures = {f.index: f for f in fallback[1].failures} if fallback else {}
    previews = _previews(store, finals)
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
            accountant.failure(index, answer.error, attempts=attempts, item=previews.get(index, ""))
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


def _previews(store: JobStore, finals: Finals) -> dict[int, Any]:
    """The inputs of failed lines, read back from the shard files, for failure previews."""
    wanted_by_shard: dict[int, set[int]] = {}
    for index, (answer, _, shard) in finals.items():
        if answer.error is not None:
            wanted_by_shard.setdefault(shard.shard, set()).add(index)
    previews: dict[int, Any] = {}
    for number, wanted in wanted_by_shard.items():
        for index, value in line_inputs(store.read_shard(number), wanted).items():
            if isinstance(value, list) and value and isinstance(value[-1], dict):
                value = value[-1].get("content", value)
            previews[index] = value
    return previews
