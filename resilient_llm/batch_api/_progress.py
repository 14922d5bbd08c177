"""Where a Batch API job stands, as its state file records it (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from ._state import JobState

__all__ = ["JobProgress", "progress_of"]


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
