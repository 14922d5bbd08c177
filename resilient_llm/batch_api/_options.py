"""`BatchJobOptions`: how a Batch API job splits, submits, waits and falls back."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._ops import JOB_KEY, SHARD_KEY, TRY_KEY
from ._plan import Limits

__all__ = ["BatchJobOptions"]


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _positive_float(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class BatchJobOptions:
    """How a Batch API job runs. Every field has OpenAI's limit or a safe default.

    Attributes:
        max_lines: request lines per batch (OpenAI: 50,000).
        max_bytes: bytes per batch input file (OpenAI: 200 MB).
        max_inputs: embedding inputs per batch (OpenAI: 50,000).
        inputs_per_line: embedding inputs per request line, 1 to 2048 (at most 300,000 bytes
            of text). 1 (the default) makes a poisoned input fail alone; more make fewer,
            smaller lines and files, but a line the server rejects fails all its inputs
            (``fallback=True`` then isolates the bad one live).
        max_in_flight: batches running at once (``None``: no bound). Keeps a job under its
            model's enqueued-token limit; a batch refused for that limit is queued again and
            the bound learned from it.
        max_resubmits: how many times a line that failed transiently (429, 5xx, expired,
            cancelled by the system, an answer that failed its checks) is sent again before it
            becomes an ``ItemFailure``.
        fallback: run the inputs still failing transiently at the end live, through
            ``client.embed_batch`` (which isolates poisoned inputs) or one chat call each.
        poll_interval: first wait between two looks at the batches, in seconds.
        max_poll_interval: the wait grows to this while nothing changes.
        max_poll_errors: consecutive failed looks (network down, 5xx) before ``wait``
            raises the last error; the job can be resumed later.
        upload_deadline: deadline of one upload (``None``: the client's deadline).
        download_deadline: deadline of one result download (``None``: the client's).
        metadata: extra metadata on every batch (at most 13 pairs; three are the job's).
    """

    max_lines: int = 50_000
    max_bytes: int = 200_000_000
    max_inputs: int = 50_000
    inputs_per_line: int = 1
    max_in_flight: int | None = None
    max_resubmits: int = 2
    fallback: bool = False
    poll_interval: float = 5.0
    max_poll_interval: float = 60.0
    max_poll_errors: int = 10
    upload_deadline: float | None = None
    download_deadline: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_lines", "max_bytes", "max_inputs", "inputs_per_line", "max_poll_errors"):
            _positive_int(name, getattr(self, name))
        if self.inputs_per_line > 2048:
            raise ValueError(f"inputs_per_line must be <= 2048, got {self.inputs_per_line}")
        _positive_int("max_in_flight", self.max_in_flight, allow_none=True)
        if (
            isinstance(self.max_resubmits, bool)
            or not isinstance(self.max_resubmits, int)
            or self.max_resubmits < 0
        ):
            raise ValueError(f"max_resubmits must be an int >= 0, got {self.max_resubmits!r}")
        if self.max_lines > 50_000 or self.max_inputs > 50_000 or self.max_bytes > 200 * 2**20:
            raise ValueError(
                "max_lines, max_inputs and max_bytes may not exceed the Batch API's limits "
                "(50,000 lines, 50,000 inputs, 200 MB)"
            )
        if not isinstance(self.fallback, bool):
            raise TypeError(f"fallback must be a bool, got {self.fallback!r}")
        _positive_float("poll_interval", self.poll_interval)
        _positive_float("max_poll_interval", self.max_poll_interval)
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("max_poll_interval must be >= poll_interval")
        _positive_float("upload_deadline", self.upload_deadline, allow_none=True)
        _positive_float("download_deadline", self.download_deadline, allow_none=True)
        if not isinstance(self.metadata, Mapping) or len(self.metadata) > 13:
            raise ValueError("metadata must be a mapping of at most 13 str -> str pairs")
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("metadata keys and values must be str")
            if len(key) > 64 or len(value) > 512:
                raise ValueError("metadata keys take <= 64 characters, values <= 512")
            if key in (JOB_KEY, SHARD_KEY, TRY_KEY):
                raise ValueError(f"metadata key {key!r} is the job's own")

    @property
    def limits(self) -> Limits:
        """The per-batch limits."""
        return Limits(self.max_lines, self.max_bytes, self.max_inputs, self.inputs_per_line)

    def runtime(self) -> dict[str, Any]:
        """The options a job keeps in its state (all but the limits), as JSON values."""
        values = asdict(self)
        for name in ("max_lines", "max_bytes", "max_inputs", "inputs_per_line"):
            del values[name]
        values["metadata"] = dict(self.metadata)
        return values

    @classmethod
    def from_state(cls, limits: Mapping[str, int], runtime: Mapping[str, Any]) -> BatchJobOptions:
        """The options a state file recorded."""
        return cls(**{**runtime, **limits})
