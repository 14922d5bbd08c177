"""What the Batch API emulation holds: files, the lines of a batch, batches and their views as
the API shows them, and the settings (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .._request import ApiRequest

__all__ = [
    "API_ENDPOINTS",
    "FILE_PURPOSES",
    "RUNNABLE_ENDPOINTS",
    "TERMINAL",
    "Batch",
    "BatchFault",
    "File",
    "Line",
    "LineFaultKind",
    "Settings",
]

#: Endpoints whose lines the emulator can run.
RUNNABLE_ENDPOINTS = ("/v1/embeddings", "/v1/chat/completions")
# Accepted by the real API (CreateBatchRequest.endpoint), refused here as unsupported.
API_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
)
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
_WINDOW = 24 * 3600
_FILE_TTL = 30 * 24 * 3600

LineFaultKind = Literal["status", "corrupt"]


@dataclass
class File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.created_at + _FILE_TTL,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class Line:
    number: int  # 1-based, as the API reports lines
    custom_id: str
    request: ApiRequest  # the body, parsed by the live endpoints' parser
    tokens: int
    inputs: int  # embedding inputs


@dataclass
class BatchFault:
    kind: Literal["fail", "expire", "cancel"]
    after_lines: int = 0
    errors: tuple[dict[str, Any], ...] = ()


@dataclass
class Batch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    sequence: int
    fault: BatchFault | None
    status: str = "validating"
    model: str | None = None
    lines: list[Line] = field(default_factory=list)
    done: int = 0
    output: list[bytes] = field(default_factory=list)
    errors_out: list[bytes] = field(default_factory=list)
    completed_lines: int = 0
    failed_lines: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: list[dict[str, Any]] | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def expires_at(self) -> int:
        return self.created_at + _WINDOW

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed_lines,
                "failed": self.failed_lines,
            },
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


@dataclass
class Settings:
    validating_seconds: float = 0.0
    processing_seconds: float = 0.0
    line_seconds: float = 0.0
    finalizing_seconds: float = 0.0
    cancelling_seconds: float = 0.0
    advance_per_poll: float = 0.0
    max_lines: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    max_embedding_inputs: int = 50_000
    enqueued_token_limit: int | None = None
    shuffle: bool = True
