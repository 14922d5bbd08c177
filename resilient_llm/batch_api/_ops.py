"""The calls a job asks its driver to make, what comes back, and how the SDK makes each (no I/O).

The job's logic is a generator (`_engine`, a `Program`) that yields these records; the sync and
async drivers carry each out through the client's ``call()`` (retries, deadline) and send back
the result, the way tenacity's ``iter`` decides and its two loops act. What an op asks of the
official SDK (method, arguments, what to read from the answer) is its `SdkRequest`, written
once here: the drivers only call and wait.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from ._errors import BatchAPIUnsupported

if TYPE_CHECKING:
    from ._options import BatchJobOptions

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
    "Program",
    "Retrieve",
    "RunLive",
    "SHARD_KEY",
    "SdkRequest",
    "TRY_KEY",
    "Upload",
    "batch_info",
    "list_kwargs",
    "matches",
    "raise_unsupported",
    "step",
]

R = TypeVar("R")

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


def _same(answer: Any) -> Any:
    return answer


def _page(answer: Any) -> Page:
    return Page([batch_info(b) for b in answer.data], bool(answer.has_more))


def _id(answer: Any) -> Any:
    return answer.id


def _content(answer: Any) -> bytes:
    return bytes(answer.content)


def list_kwargs(after: str | None) -> dict[str, Any]:
    """The arguments of ``batches.list`` for the page after `after` (newest first)."""
    return {"limit": 100, "after": after} if after else {"limit": 100}


@dataclass(frozen=True, slots=True)
class SdkRequest:
    """One method of the official SDK that an op calls through ``client.call``.

    Attributes:
        name: ``resource_method`` (``batches_retrieve``): the SDK method, and the name of the
            function ``client.call`` runs (its operation in logs and events).
        args, kwargs: the method's arguments.
        read: applied to the SDK's answer within the attempt.
        answer: applied to what ``client.call`` returns: the op's result.
        deadline: the call's ``deadline=`` (``None``: the client's).
        lookup: before a retry, look for the batch an earlier attempt created (`CreateBatch`).
        ended_ok: a 400 means the batch had ended first: the op's result is ``None``.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    read: Callable[[Any], Any] = _same
    answer: Callable[[Any], Any] = _same
    deadline: float | None = None
    lookup: CreateBatch | None = None
    ended_ok: bool = False

    def method(self, official: Any) -> Any:
        """The bound SDK method on `official` (an ``OpenAI`` or ``AsyncOpenAI``)."""
        resource, _, method = self.name.partition("_")
        return getattr(getattr(official, resource), method)

    def call_options(self) -> dict[str, float]:
        """The keyword arguments of ``client.call`` besides the function."""
        return {} if self.deadline is None else {"deadline": self.deadline}

    def named(self, function: Callable[..., Any], driver: str) -> Callable[..., Any]:
        """`function`, named as the driver's own function for this call was (``operation``)."""
        scope = "_creator" if self.lookup is not None else "_dispatch"
        function.__name__ = self.name
        function.__qualname__ = f"{driver}.{scope}.<locals>.{self.name}"
        return function


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ``GET /batches``, newest first."""

    batches: list[BatchInfo]
    has_more: bool


@dataclass(frozen=True, slots=True)
class ListBatches:
    """``GET /batches?limit=100&after=...`` → `Page`."""

    after: str | None

    def request(self, options: BatchJobOptions) -> SdkRequest:
        return SdkRequest("batches_list", kwargs=list_kwargs(self.after), read=_page)


@dataclass(frozen=True, slots=True)
class Upload:
    """``POST /files`` (purpose ``batch``) → the file id."""

    filename: str
    data: bytes

    def request(self, options: BatchJobOptions) -> SdkRequest:
        file = (self.filename, self.data, "application/jsonl")
        return SdkRequest(
            "files_create",
            kwargs={"file": file, "purpose": "batch"},
            read=_id,
            deadline=options.upload_deadline,
        )


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

    def request(self, options: BatchJobOptions) -> SdkRequest:
        kwargs = {
            "input_file_id": self.input_file_id,
            "endpoint": self.endpoint,
            "completion_window": "24h",
            "metadata": self.metadata,
        }
        return SdkRequest("batches_create", kwargs=kwargs, answer=batch_info, lookup=self)

    def search(self, page: Any) -> tuple[Any, str | None]:
        """This batch in one page of ``batches.list``: ``(batch, None)``; not there:
        ``(None, the next page's cursor)``, or ``(None, None)`` when no older page can hold it.
        """
        for batch in page.data:
            if matches(batch_info(batch), self.job_id, self.shard, self.tries):
                return batch, None
        if not page.has_more or not page.data or page.data[-1].created_at < self.not_before:
            return None, None
        return None, page.data[-1].id


@dataclass(frozen=True, slots=True)
class Retrieve:
    """``GET /batches/{id}`` → `BatchInfo`."""

    batch_id: str

    def request(self, options: BatchJobOptions) -> SdkRequest:
        return SdkRequest("batches_retrieve", (self.batch_id,), answer=batch_info)


@dataclass(frozen=True, slots=True)
class Download:
    """``GET /files/{id}/content`` → bytes."""

    file_id: str

    def request(self, options: BatchJobOptions) -> SdkRequest:
        return SdkRequest(
            "files_content", (self.file_id,), read=_content, deadline=options.download_deadline
        )


@dataclass(frozen=True, slots=True)
class Cancel:
    """``POST /batches/{id}/cancel`` → `BatchInfo` (``None`` if it had ended already)."""

    batch_id: str

    def request(self, options: BatchJobOptions) -> SdkRequest:
        # A 400: it ended before the cancel arrived; the next look collects it.
        return SdkRequest("batches_cancel", (self.batch_id,), answer=batch_info, ended_ok=True)


@dataclass(frozen=True, slots=True)
class RunLive:
    """Run leftovers live: ``embed_batch`` (embeddings) or one chat call each → `BatchResult`."""

    kind: str
    inputs: list[Any]
    model: str
    params: dict[str, Any]


Op = ListBatches | Upload | CreateBatch | Retrieve | Download | Cancel | RunLive
#: A job's logic: yields the ops to carry out, is sent their results, returns its value.
Program = Generator[Op, Any, R]


def step(program: Program[Any], value: Any) -> tuple[bool, Any]:
    """Run the program to its next op: ``(finished, op or result)``."""
    try:
        return False, program.send(value)
    except StopIteration as stop:
        return True, stop.value


def raise_unsupported(exc: Exception, base_url: str, op: Op) -> None:
    """Raise `BatchAPIUnsupported` for a 404/405 on a collection endpoint; else return."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (404, 405):
        return
    if isinstance(op, ListBatches):
        request = "GET /batches"
    elif isinstance(op, Upload):
        request = "POST /files"
    elif isinstance(op, CreateBatch):
        request = "POST /batches"
    else:
        return
    error = BatchAPIUnsupported(base_url, exc.status_code, request)
    error.__cause__ = exc
    raise error from exc
