"""An ended batch's answers: its files read and checked, or its failure spread over its lines.

The steps `JobEngine` takes for a shard whose batch has ended, shared by collecting it and by
re-reading it when the result is assembled in another process. No network here: the files are
asked of the driver with `Download`.
"""

from __future__ import annotations

import logging

from ._answers import Answer, Decoder, chat_decoder, embeddings_decoder, read_answers
from ._errors import BatchLineError
from ._ops import Download, Program
from ._plan import line_ranges
from ._state import JobState, JobStore, Shard

__all__ = ["Missing", "batch_failure", "read_shard"]

logger = logging.getLogger("resilient_llm")

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


def _decoder(state: JobState) -> Decoder:
    if state.kind == "embeddings":
        return embeddings_decoder(state.request.get("dimensions"))
    return chat_decoder()


def read_shard(state: JobState, shard: Shard) -> Program[dict[int, Answer]]:
    """Download and check a shard's answers (the last one per input wins)."""
    expected = set(shard.indices())
    decode = _decoder(state)
    answers: dict[int, Answer] = {}
    for file_id in (shard.error_file_id, shard.output_file_id):
        if file_id is None:
            continue
        data: bytes = yield Download(file_id)
        for answer in read_answers(data, expected, decode, state.endpoint):
            answers[answer.index] = answer
    return answers


def batch_failure(
    store: JobStore, state: JobState, shard: Shard, max_resubmits: int
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
    line_ids = line_ranges(store.read_shard(shard.shard))
    described = "; ".join(
        f"{error.get('code')}: {error.get('message')}"
        + (f" (line {error['line']})" if error.get("line") else "")
        for error in errors[:3]
    )
    if _TOKEN_LIMIT in codes:
        others = sum(s.stage == "created" for s in state.shards if s is not shard)
        if others and shard.tries <= max_resubmits:
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


class Missing:
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
