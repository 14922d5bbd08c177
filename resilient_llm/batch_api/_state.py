"""A job's state on disk: one JSON file written atomically, its shards' request files beside it.

Layout for ``state="ingest.json"``::

    ingest.json          the state (format below), replaced atomically on every change
    ingest.json.lock     an advisory lock (flock) held while a process works on the job
    ingest.json.shards/  shard-00000.jsonl ...: the request lines of each shard, as uploaded

Every write goes to a temporary file in the same directory, is flushed and fsync'ed, renamed
over the old file, and the directory is fsync'ed: a reader (or a process resuming after a kill)
sees the old state or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FORMAT",
    "VERSION",
    "JobState",
    "JobStore",
    "Shard",
    "atomic_write",
    "indices",
    "to_ranges",
]

FORMAT = "resilient_llm.batch_job"
VERSION = 1

#: Shard stages, in order.
STAGES = ("planned", "uploaded", "created", "done", "collected")


@dataclass
class Shard:
    """One input file and the batch that runs it.

    Attributes:
        shard: its number within the job (metadata ``resilient_llm_shard``).
        round: 0 for the inputs' first submission, ``n`` for the ``n``-th resubmission.
        ranges: the input indices it holds, as ``[start, stop)`` pairs, in file order.
        lines: how many request lines (one input each, or several embedding inputs).
        bytes: size of its request file.
        stage: ``planned`` (file written locally), ``uploaded`` (``file_id`` known),
            ``created`` (``batch_id`` known, batch running), ``done`` (batch ended, answers
            not read yet), ``collected`` (answers read, leftovers planned as a new shard).
        tries: batches created for it (more than one after an enqueued-token-limit refusal).
        sent_lines: lines sent over all its tries.
        never_sent: cancelled by the user before any batch was created.
    """

    shard: int
    round: int
    ranges: list[list[int]]
    lines: int
    bytes: int
    stage: str = "planned"
    tries: int = 0
    sent_lines: int = 0
    file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    batch_errors: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    total_tokens: int = 0
    succeeded: int = 0
    failed: int = 0
    resubmitted: int = 0
    rate_limited: int = 0
    expired: int = 0
    never_sent: bool = False

    def indices(self) -> Iterator[int]:
        """Its input indices, in file order."""
        return indices(self.ranges)

    @property
    def size(self) -> int:
        """How many inputs it holds."""
        return sum(stop - start for start, stop in self.ranges)


@dataclass
class JobState:
    """Everything needed to resume a job in another process.

    Attributes:
        job_id: tags every batch of the job (metadata ``resilient_llm_job``).
        kind: ``embeddings`` or ``chat``.
        endpoint: the batches' endpoint.
        model: the model every line names.
        request: what shaped the request lines (``dimensions``, chat parameters...).
        fingerprint: sha256 of the inputs, to recognise them when a job is started again.
        total: how many inputs.
        created_at: Unix time the job was made (batches older than this are not its own).
        limits: per batch ``max_lines``, ``max_bytes``, ``max_inputs``; ``inputs_per_line``.
        options: the runtime options (see ``BatchJobOptions``).
        cancelled: the user cancelled the job.
        in_flight_limit: batches in flight the server accepted at most (learned from
            ``token_limit_exceeded``), ``None`` until it refused one.
        rejected: inputs never sent: ``{"index", "error_type", "message", "item"}``.
        shards: the shards, in creation order.
    """

    job_id: str
    kind: str
    endpoint: str
    model: str
    request: dict[str, Any]
    fingerprint: str
    total: int
    created_at: float
    limits: dict[str, int]
    options: dict[str, Any]
    cancelled: bool = False
    in_flight_limit: int | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)
    shards: list[Shard] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Every shard collected: every input has its final outcome."""
        return all(shard.stage == "collected" for shard in self.shards)

    def to_json(self) -> bytes:
        """The state file's bytes: one key per line, one shard or rejected input per line."""
        document = {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}
        lines = []
        for key, value in document.items():
            if key in ("shards", "rejected") and value:
                rows = ",\n".join("  " + json.dumps(row) for row in value)
                lines.append(f"{json.dumps(key)}: [\n{rows}\n ]")
            else:
                lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
        return ("{\n " + ",\n ".join(lines) + "\n}\n").encode()

    @classmethod
    def from_json(cls, data: bytes, path: Path) -> JobState:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"{path} is not a batch job state file: {exc}") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"{path} is not a resilient_llm batch job state file")
        if document.get("version") != VERSION:
            raise ValueError(
                f"{path} has state format version {document.get('version')!r}; this version "
                f"of resilient_llm reads version {VERSION}"
            )
        try:
            shards = [Shard(**shard) for shard in document.pop("shards")]
            del document["format"], document["version"]
            return cls(shards=shards, **document)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is a damaged batch job state file: {exc}") from exc


def indices(ranges: Iterable[list[int]]) -> Iterator[int]:
    """The indices of ``[start, stop)`` ranges, in order."""
    for start, stop in ranges:
        yield from range(start, stop)


def to_ranges(values: Iterable[int]) -> list[list[int]]:
    """Increasing indices as ``[start, stop)`` ranges (runs of consecutive indices merged)."""
    ranges: list[list[int]] = []
    for value in values:
        if ranges and ranges[-1][1] == value:
            ranges[-1][1] = value + 1
        else:
            ranges.append([value, value + 1])
    return ranges


def _fsync_directory(directory: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened there; rename is durable enough
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, fsync of the directory."""
    with atomic_writer(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A binary stream whose content replaces `path` atomically when the block ends cleanly."""
    temporary = _temporary(path)
    try:
        with open(temporary, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


class JobStore:
    """Reads and writes one job's state file and shard files.

    Args:
        path: the state file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.shard_dir = self.path.with_name(self.path.name + ".shards")
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def exists(self) -> bool:
        """Whether the state file exists."""
        return self.path.exists()

    def load(self) -> JobState:
        """The saved state.

        Raises:
            FileNotFoundError: no state file.
            ValueError: the file is not a (readable) state file.
        """
        return JobState.from_json(self.path.read_bytes(), self.path)

    def save(self, state: JobState) -> None:
        """Replace the state file atomically."""
        atomic_write(self.path, state.to_json())

    def shard_path(self, number: int) -> Path:
        """Where shard `number`'s request lines live."""
        return self.shard_dir / f"shard-{number:05d}.jsonl"

    @contextlib.contextmanager
    def shard_writer(self, number: int) -> Iterator[IO[bytes]]:
        """Write shard `number`'s request lines atomically."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        with atomic_writer(self.shard_path(number)) as stream:
            yield stream

    def read_shard(self, number: int) -> bytes:
        """Shard `number`'s request lines."""
        return self.shard_path(number).read_bytes()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the job's advisory lock: one process at a time works on a job.

        A process killed while holding it releases it with its file descriptors.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
