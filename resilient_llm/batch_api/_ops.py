"""The calls a job asks its driver to make, and what comes back (no I/O here).

The job's logic is a generator (`_engine`) that yields these records; the sync and async drivers
carry each out through the client's ``call()`` (retries, deadline) and send back the result,
the way tenacity's ``iter`` decides and its two loops act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from ._errors import BatchAPIUnsupported

__all__ = [
    "BatchInfo",
    "Cancel",
    "CreateBatch",
    "Download",
    "JOB_KEY",
    "LOOKUP_SKEW",
    "ListBatches",
    "Op",
    "Page",
    "Retrieve",
    "RunLive",
    "SHARD_KEY",
    "TRY_KEY",
    "Upload",
    "batch_info",
    "matches",
    "unsupported",
]

JOB_KEY = "resilient_llm_job"
SHARD_KEY = "resilient_llm_shard"
TRY_KEY = "resilient_llm_try"
#: Batches listed newest first: stop looking this long before the job was made (clock skew).
LOOKUP_SKEW = 3600.0

TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What a job needs of an OpenAI ``Batch``."""

    id: str
    status: str
    created_at: float
    metadata: dict[str, str]
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]]
    input_tokens: int
    total_tokens: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def batch_info(batch: Any) -> BatchInfo:
    """Read an official ``Batch`` object (any openai major)."""
    errors = getattr(batch.errors, "data", None) or []
    usage = batch.usage
    return BatchInfo(
        id=batch.id,
        status=batch.status,
        created_at=float(batch.created_at or 0),
        metadata=dict(batch.metadata or {}),
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=[error.model_dump() for error in errors],
        input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
        total_tokens=int(getattr(usage, "total_tokens", 0) or 0),
    )


def matches(info: BatchInfo, job_id: str, shard: int, tries: int) -> bool:
    """Whether `info` is try `tries` of shard `shard` of job `job_id`."""
    metadata = info.metadata
    return (
        metadata.get(JOB_KEY) == job_id
        and metadata.get(SHARD_KEY) == str(shard)
        and metadata.get(TRY_KEY, "1") == str(tries)
    )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``GET /batches``, newest first."""

    batches: list[BatchInfo]
    has_more: bool


@dataclass(frozen=True, slots=True)
class ListBatches:
    """``GET /batches?limit=100&after=...`` → `Page`."""

    after: str | None


@dataclass(frozen=True, slots=True)
class Upload:
    """``POST /files`` (purpose ``batch``) → the file id."""

    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CreateBatch:
    """``POST /batches`` → `BatchInfo`.

    A retry after an answer that was lost (a timeout, a reset) looks the batch up by its
    metadata first, so one shard never gets two batches.
    """

    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    job_id: str
    shard: int
    tries: int
    not_before: float


@dataclass(frozen=True, slots=True)
class Retrieve:
    """``GET /batches/{id}`` → `BatchInfo`."""

    batch_id: str


@dataclass(frozen=True, slots=True)
class Download:
    """``GET /files/{id}/content`` → bytes."""

    file_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """``POST /batches/{id}/cancel`` → `BatchInfo` (``None`` if it had ended already)."""

    batch_id: str


@dataclass(frozen=True, slots=True)
class RunLive:
    """Run leftovers live: ``embed_batch`` (embeddings) or one chat call each → `BatchResult`."""

    kind: str
    inputs: list[Any]
    model: str
    params: dict[str, Any]


Op = ListBatches | Upload | CreateBatch | Retrieve | Download | Cancel | RunLive


def unsupported(exc: BaseException, base_url: str, op: Op) -> BaseException:
    """`BatchAPIUnsupported` for a 404/405 on a collection endpoint; `exc` otherwise."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (404, 405):
        return exc
    if isinstance(op, ListBatches):
        request = "GET /batches"
    elif isinstance(op, Upload):
        request = "POST /files"
    elif isinstance(op, CreateBatch):
        request = "POST /batches"
    else:
        return exc
    error = BatchAPIUnsupported(base_url, exc.status_code, request)
    error.__cause__ = exc
    return error
