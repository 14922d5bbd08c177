"""OpenAI's Batch API (`/v1/files`, `/v1/batches`) emulated for the loopback server.

A batch runs every line of its input file through the server's own endpoint handlers
(`parse_request` / `respond`, plus the poison marker), so a vector from a batch equals the one the
live endpoint returns and a poisoned line fails with the same 400. Time is a clock the test moves
(`BatchEmulator.advance`); with the default durations of zero a batch is done the first time it
is looked at after its creation.

Shapes follow OpenAI's OpenAPI description (`OpenAIFile`, `DeleteFileResponse`,
`ListFilesResponse`, `Batch`, `ListBatchesResponse`, the batch request output lines); validation
follows what the Batch API does: a bad input file is accepted at creation and the batch then
``failed`` with `errors.data` (`invalid_json_line`, `duplicate_custom_id`, `url_mismatch`,
`model_mismatch`, `empty_file`, `too_many_tasks`, `token_limit_exceeded`).

No I/O here: the server calls `BatchEmulator.answer` with a parsed request and writes the reply.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote

from ._api import JSON_HEADERS, ApiRequest, Reply, error_reply, parse_request, respond
from ._faults import Fault

if TYPE_CHECKING:
    from ._server import MockOpenAIServer

__all__ = ["BatchEmulator", "RUNNABLE_ENDPOINTS"]

#: Endpoints whose lines the emulator can run.
RUNNABLE_ENDPOINTS = ("/v1/embeddings", "/v1/chat/completions")
# Accepted by the real API (CreateBatchRequest.endpoint), refused here as unsupported.
_API_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
)
_FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
_WINDOW = 24 * 3600
_FILE_TTL = 30 * 24 * 3600
_OCTET_HEADERS = b"content-type: application/octet-stream\r\n"

LineFaultKind = Literal["status", "corrupt"]


@dataclass
class _File:
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
class _Line:
    number: int  # 1-based, as the API reports lines
    custom_id: str
    request: ApiRequest  # the body, parsed by the live endpoints' parser
    tokens: int
    inputs: int  # embedding inputs


@dataclass
class _BatchFault:
    kind: Literal["fail", "expire", "cancel"]
    after_lines: int = 0
    errors: tuple[dict[str, Any], ...] = ()


@dataclass
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    sequence: int
    fault: _BatchFault | None
    status: str = "validating"
    model: str | None = None
    lines: list[_Line] = field(default_factory=list)
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
class _Settings:
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


class BatchEmulator:
    """The Batch API of a `MockOpenAIServer`, reached as ``server.batches``.

    Serves ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``, ``GET
    /v1/files/{id}/content``, ``POST/GET /v1/batches``, ``GET /v1/batches/{id}`` and ``POST
    /v1/batches/{id}/cancel``. Thread-safe: the server's loop answers requests while a test
    advances the clock, scripts faults or reads the batches.

    Timeline of a batch (durations set with `configure`, all zero by default): ``validating``
    for `validating_seconds`, then ``in_progress`` while its lines run (spread evenly over
    `processing_seconds` plus `line_seconds` per line), ``finalizing`` for
    `finalizing_seconds`, then ``completed``. A batch still running when its 24 h completion
    window ends is ``expired``: lines done so far are in its output file, the others in its
    error file with code ``batch_expired``. A cancelled batch is ``cancelling`` for
    `cancelling_seconds`, then ``cancelled`` the same way (``batch_cancelled``).

    Example:
        >>> with MockOpenAIServer() as server:  # doctest: +SKIP
        ...     server.batches.configure(processing_seconds=3600)
        ...     ...  # create a batch
        ...     server.batches.advance(3600)  # now it is done
    """

    def __init__(self, server: MockOpenAIServer, *, poison_marker: str | None) -> None:
        self._server = server
        self._poison = poison_marker
        self._lock = threading.Lock()
        self._settings = _Settings()
        self._available = True
        self._offset = 0.0
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._sequence = itertools.count()
        self._numbers = itertools.count(1)
        self._rng = random.Random("batches")
        self._batch_faults: deque[_BatchFault] = deque()
        self._line_faults: dict[str, deque[tuple[LineFaultKind, int]]] = {}
        self._download_faults: deque[Fault] = deque()
        self._peak_in_progress = 0

    # ------------------------------------------------------------------ settings and clock

    def configure(self, **settings: float | int | bool | None) -> None:
        """Change how batches behave; unnamed settings keep their value.

        Args:
            **settings: any of ``validating_seconds``, ``processing_seconds``,
                ``finalizing_seconds``, ``cancelling_seconds`` (durations, >= 0),
                ``line_seconds`` (added to ``processing_seconds`` per line of a batch),
                ``advance_per_poll`` (seconds the clock moves at each ``GET
                /v1/batches/{id}``, so that a client polling in a loop sees time pass),
                ``max_lines`` (50,000), ``max_file_bytes`` (200 MB),
                ``max_embedding_inputs`` (50,000), ``enqueued_token_limit`` (``None``: none;
                a batch whose tokens would take the tokens of running batches of its model
                over it fails with ``token_limit_exceeded``) and ``shuffle`` (output lines in
                random order, as the API may write them; on by default).

        Raises:
            TypeError: an unknown setting.
            ValueError: a negative or non-finite number.
        """
        with self._lock:
            for name, value in settings.items():
                if not hasattr(self._settings, name):
                    raise TypeError(f"unknown batch setting {name!r}")
                if name == "shuffle":
                    self._settings.shuffle = bool(value)
                    continue
                if name == "enqueued_token_limit" and value is None:
                    self._settings.enqueued_token_limit = None
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{name} must be a number, got {value!r}")
                if value < 0 or not math.isfinite(value):
                    raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
                counted = name.startswith("max_") or name == "enqueued_token_limit"
                if counted and (not isinstance(value, int) or value < 1):
                    raise ValueError(f"{name} must be an int >= 1, got {value!r}")
                setattr(self._settings, name, value)

    @property
    def available(self) -> bool:
        """Whether the server has a Batch API; ``False`` answers 404, as vLLM and Ollama do."""
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = bool(value)

    @property
    def now(self) -> float:
        """The emulator's clock: wall-clock time plus every `advance`."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward and bring every batch up to date.

        Args:
            seconds: how far, >= 0.
        """
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        with self._lock:
            self._offset += seconds
            self._tick()

    # ------------------------------------------------------------------ faults

    def fail_next_batch(
        self,
        code: str = "server_error",
        message: str = "The batch failed.",
        *,
        line: int | None = None,
        param: str | None = None,
    ) -> None:
        """The next batch created fails at validation with one `errors.data` entry.

        ``code="token_limit_exceeded"`` is what OpenAI answers when the model's enqueued-token
        limit is reached (see also ``configure(enqueued_token_limit=...)``).
        """
        error = {"code": code, "message": message, "param": param, "line": line}
        with self._lock:
            self._batch_faults.append(_BatchFault("fail", errors=(error,)))

    def expire_next_batch(self, after_lines: int = 0) -> None:
        """The next batch created runs `after_lines` lines, then expires at once."""
        self._queue_stall("expire", after_lines)

    def cancel_next_batch(self, after_lines: int = 0) -> None:
        """The next batch created runs `after_lines` lines, then is cancelled by the system."""
        self._queue_stall("cancel", after_lines)

    def _queue_stall(self, kind: Literal["expire", "cancel"], after_lines: int) -> None:
        if isinstance(after_lines, bool) or not isinstance(after_lines, int) or after_lines < 0:
            raise ValueError(f"after_lines must be an int >= 0, got {after_lines!r}")
        with self._lock:
            self._batch_faults.append(_BatchFault(kind, after_lines=after_lines))

    def fail_lines(self, custom_ids: Iterable[str], status: int = 500, *, times: int = 1) -> None:
        """Lines with these custom ids answer `status` (an OpenAI error body) `times` times.

        Args:
            custom_ids: the lines, in whatever batch they come.
            status: 400-599.
            times: how many runs of each line fail before it answers normally again.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error status (400-599), got {status}")
        self._queue_lines(custom_ids, ("status", status), times)

    def corrupt_lines(self, custom_ids: Iterable[str], *, times: int = 1) -> None:
        """Lines with these custom ids answer 200 with a broken body `times` times.

        An embedding comes back as an empty vector, a chat completion with empty text: answers
        that a careful client must not take as data.
        """
        self._queue_lines(custom_ids, ("corrupt", 200), times)

    def _queue_lines(
        self, custom_ids: Iterable[str], fault: tuple[LineFaultKind, int], times: int
    ) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an int >= 1, got {times!r}")
        if isinstance(custom_ids, str):
            raise TypeError("custom_ids must be an iterable of str, not one str")
        with self._lock:
            for custom_id in custom_ids:
                self._line_faults.setdefault(str(custom_id), deque()).extend([fault] * times)

    def fault_downloads(self, *faults: Fault) -> None:
        """Apply these server faults, one each, to the downloads of the next result files.

        Each output or error file a batch writes from now on takes the next fault, scripted on
        its ``/v1/files/{id}/content`` path (``Fault.drip(0.01)`` makes a download slow
        enough to kill the client in the middle of it).
        """
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._download_faults.extend(faults)

    # ------------------------------------------------------------------ inspection

    def batches(self) -> list[dict[str, Any]]:
        """Every batch as the API shows it now, oldest first."""
        with self._lock:
            self._tick()
            return [b.view() for b in sorted(self._batches.values(), key=lambda b: b.sequence)]

    def batch(self, batch_id: str) -> dict[str, Any]:
        """One batch as the API shows it now.

        Raises:
            KeyError: no such batch.
        """
        with self._lock:
            self._tick()
            return self._batches[batch_id].view()

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (input, output and error files) as the API shows it."""
        with self._lock:
            return [f.view() for f in self._files.values()]

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a stored file.

        Raises:
            KeyError: no such file.
        """
        with self._lock:
            return self._files[file_id].data

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The parsed lines of a batch's input file."""
        with self._lock:
            data = self._files[self._batches[batch_id].input_file_id].data
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    @property
    def peak_in_progress(self) -> int:
        """The most batches seen ``in_progress`` or ``finalizing`` at once."""
        return self._peak_in_progress

    # ------------------------------------------------------------------ HTTP

    @staticmethod
    def serves(path: str) -> bool:
        """Whether `path` belongs to the Batch API (files included)."""
        return path in ("/v1/files", "/v1/batches") or path.startswith(
            ("/v1/files/", "/v1/batches/")
        )

    def answer(
        self, method: str, target: str, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> Reply:
        """Answer one request to a path that `serves` accepts.

        Args:
            method: HTTP method.
            target: request target, with its query string.
            headers: request headers (h11's lower-cased pairs).
            body: request body.

        Returns:
            The reply.
        """
        path, _, query = target.partition("?")
        if not self._available:
            return error_reply(404, f"Invalid URL ({method} {path})")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        parts = path.strip("/").split("/")[1:]  # without "v1"
        with self._lock:
            if parts[0] == "files":
                return self._files_route(method, parts[1:], params, headers, body)
            return self._batches_route(method, parts[1:], params, body)

    def _files_route(
        self,
        method: str,
        rest: list[str],
        params: Mapping[str, str],
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
    ) -> Reply:
        if not rest:
            if method == "POST":
                return self._upload(headers, body)
            if method == "GET":
                return self._list_files(params)
        elif len(rest) == 1:
            file = self._files.get(unquote(rest[0]))
            if method in ("GET", "DELETE") and file is None:
                return _not_found("File", unquote(rest[0]))
            if method == "GET" and file is not None:
                return _json(file.view())
            if method == "DELETE" and file is not None:
                del self._files[file.id]
                return _json({"id": file.id, "object": "file", "deleted": True})
        elif len(rest) == 2 and rest[1] == "content" and method == "GET":
            file = self._files.get(unquote(rest[0]))
            if file is None:
                return _not_found("File", unquote(rest[0]))
            return Reply(200, _OCTET_HEADERS, file.data)
        return _bad_method(method, "/v1/files/" + "/".join(rest))

    def _batches_route(
        self, method: str, rest: list[str], params: Mapping[str, str], body: bytes
    ) -> Reply:
        self._tick()
        if not rest:
            if method == "POST":
                return self._create(body)
            if method == "GET":
                return self._list_batches(params)
        else:
            batch = self._batches.get(unquote(rest[0]))
            if len(rest) == 1 and method == "GET":
                if batch is None:
                    return _not_found("batch", unquote(rest[0]))
                if self._settings.advance_per_poll:
                    self._offset += self._settings.advance_per_poll
                    self._tick()
                return _json(batch.view())
            if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
                if batch is None:
                    return _not_found("batch", unquote(rest[0]))
                return self._cancel(batch)
        return _bad_method(method, "/v1/batches/" + "/".join(rest))

    # ------------------------------------------------------------------ files

    def _upload(self, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Reply:
        content_type = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")
        fields = _multipart(content_type, body)
        if fields is None:
            return _invalid("Expected a multipart/form-data body with 'file' and 'purpose'.")
        purpose = fields.get("purpose")
        upload = fields.get("file")
        if purpose is None:
            return _invalid("Missing required parameter: 'purpose'.", "purpose")
        purpose_text = purpose[1].decode("utf-8", "replace")
        if purpose_text not in _FILE_PURPOSES:
            return _invalid(
                f"Invalid value for 'purpose': {purpose_text!r}. Supported values are: "
                + ", ".join(repr(p) for p in _FILE_PURPOSES)
                + ".",
                "purpose",
            )
        if upload is None or upload[0] is None:
            return _invalid("Missing required parameter: 'file'.", "file")
        filename, data = upload[0], upload[1]
        if purpose_text == "batch":
            if not filename.endswith(".jsonl"):
                return _invalid(
                    f"Invalid file format for Batch API. Must be .jsonl, got {filename!r}.", "file"
                )
            if len(data) > self._settings.max_file_bytes:
                return _invalid(
                    f"File is too large for Batch API: {len(data)} bytes, at most "
                    f"{self._settings.max_file_bytes}.",
                    "file",
                )
        file = _File(
            id=f"file-{uuid.uuid4().hex[:22]}",
            filename=filename,
            purpose=purpose_text,
            data=data,
            created_at=int(self.now),
        )
        self._files[file.id] = file
        return _json(file.view())

    def _list_files(self, params: Mapping[str, str]) -> Reply:
        files = sorted(self._files.values(), key=lambda f: f.created_at)
        if params.get("order", "desc") == "desc":
            files.reverse()
        if "purpose" in params:
            files = [f for f in files if f.purpose == params["purpose"]]
        limit = _limit(params.get("limit"), 10_000, 10_000)
        if limit is None:
            return _invalid("Invalid 'limit': must be between 1 and 10000.", "limit")
        return _page([f.view() for f in files], params.get("after"), limit)

    def _store_result(self, name: str, lines: list[bytes]) -> str | None:
        if not lines:
            return None
        file = _File(
            id=f"file-{uuid.uuid4().hex[:22]}",
            filename=name,
            purpose="batch_output",
            data=b"".join(line + b"\n" for line in lines),
            created_at=int(self.now),
        )
        self._files[file.id] = file
        if self._download_faults:
            self._server.script(
                self._download_faults.popleft(), path=f"/v1/files/{file.id}/content"
            )
        return file.id

    # ------------------------------------------------------------------ batches

    def _create(self, body: bytes) -> Reply:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _invalid("We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(payload.get(name), str):
                return _invalid(f"Missing required parameter: '{name}'.", name)
        endpoint = payload["endpoint"]
        if endpoint not in _API_ENDPOINTS:
            return _invalid(
                f"Invalid value for 'endpoint': {endpoint!r}. Supported values are: "
                + ", ".join(repr(e) for e in _API_ENDPOINTS)
                + ".",
                "endpoint",
            )
        if endpoint not in RUNNABLE_ENDPOINTS:
            return _invalid(f"The mock server cannot run batches for {endpoint}.", "endpoint")
        if payload["completion_window"] != "24h":
            return _invalid(
                "Invalid value for 'completion_window': only '24h' is supported.",
                "completion_window",
            )
        metadata = payload.get("metadata")
        problem = _check_metadata(metadata)
        if problem is not None:
            return _invalid(problem, "metadata")
        file = self._files.get(payload["input_file_id"])
        if file is None:
            return _invalid(
                f"Invalid 'input_file_id': '{payload['input_file_id']}'. File not found.",
                "input_file_id",
            )
        if file.purpose != "batch":
            return _invalid(
                f"Invalid 'input_file_id': the file has purpose {file.purpose!r}, not 'batch'.",
                "input_file_id",
            )
        batch = _Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            endpoint=endpoint,
            input_file_id=file.id,
            completion_window="24h",
            metadata=dict(metadata) if metadata else None,
            created_at=int(self.now),
            sequence=next(self._sequence),
            fault=self._batch_faults.popleft() if self._batch_faults else None,
        )
        self._batches[batch.id] = batch
        return _json(batch.view())

    def _list_batches(self, params: Mapping[str, str]) -> Reply:
        limit = _limit(params.get("limit"), 20, 100)
        if limit is None:
            return _invalid("Invalid 'limit': must be between 1 and 100.", "limit")
        newest_first = sorted(self._batches.values(), key=lambda b: b.sequence, reverse=True)
        return _page([b.view() for b in newest_first], params.get("after"), limit)

    def _cancel(self, batch: _Batch) -> Reply:
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status = "cancelling"
            batch.cancelling_at = int(self.now)
            self._tick()
        elif batch.status != "cancelling":
            return _invalid(f"Cannot cancel a batch with status '{batch.status}'.")
        return _json(batch.view())

    # ------------------------------------------------------------------ the clock's work

    def _tick(self) -> None:
        """Bring every batch up to the clock. Caller holds the lock."""
        now = self.now
        for batch in sorted(self._batches.values(), key=lambda b: b.sequence):
            if batch.status not in _TERMINAL:
                self._advance_batch(batch, now)
        running = sum(b.status in ("in_progress", "finalizing") for b in self._batches.values())
        self._peak_in_progress = max(self._peak_in_progress, running)

    def _advance_batch(self, batch: _Batch, now: float) -> None:
        s = self._settings
        if batch.status == "validating":
            ready = batch.created_at + s.validating_seconds
            if now < ready:
                return
            self._validate(batch, int(ready))
            if batch.status != "in_progress":
                return
        if batch.status == "in_progress":
            assert batch.in_progress_at is not None
            until = min(now, batch.expires_at)
            duration = s.processing_seconds + s.line_seconds * len(batch.lines)
            if duration > 0:
                share = (until - batch.in_progress_at) / duration
                target = min(len(batch.lines), math.floor(len(batch.lines) * share))
            else:
                target = len(batch.lines)
            fault = batch.fault
            if fault is not None and fault.kind in ("expire", "cancel"):
                target = min(target, fault.after_lines)
            self._run_lines(batch, target)
            if (
                fault is not None
                and fault.kind in ("expire", "cancel")
                and (batch.done >= min(fault.after_lines, len(batch.lines)))
            ):
                if fault.kind == "expire":
                    self._end(batch, "expired", int(now))
                else:
                    batch.cancelling_at = int(now)
                    self._end(batch, "cancelled", int(now))
                return
            if batch.done < len(batch.lines):
                if now >= batch.expires_at:
                    self._end(batch, "expired", batch.expires_at)
                return
            batch.status = "finalizing"
            batch.finalizing_at = int(batch.in_progress_at + duration)
        if batch.status == "finalizing":
            assert batch.finalizing_at is not None
            if now >= batch.finalizing_at + s.finalizing_seconds:
                self._end(batch, "completed", int(batch.finalizing_at + s.finalizing_seconds))
            return
        if batch.status == "cancelling":
            assert batch.cancelling_at is not None
            if now >= batch.cancelling_at + s.cancelling_seconds:
                self._end(batch, "cancelled", int(batch.cancelling_at + s.cancelling_seconds))

    def _validate(self, batch: _Batch, at: int) -> None:
        file = self._files.get(batch.input_file_id)
        errors, lines, model = self._read_input(batch, file)
        fault = batch.fault
        if not errors and fault is not None and fault.kind == "fail":
            errors = list(fault.errors)
        limit = self._settings.enqueued_token_limit
        if not errors and limit is not None and model is not None:
            enqueued = sum(
                sum(line.tokens for line in other.lines[other.done :])
                for other in self._batches.values()
                if other.status in ("in_progress", "finalizing") and other.model == model
            )
            if enqueued + sum(line.tokens for line in lines) > limit:
                errors = [
                    {
                        "code": "token_limit_exceeded",
                        "message": (
                            f"Enqueued token limit reached for {model} in organization "
                            f"org-mock. Limit: {limit:,} enqueued tokens. Please try again "
                            "once some in_progress batches have been completed."
                        ),
                        "param": None,
                        "line": None,
                    }
                ]
        if errors:
            batch.status = "failed"
            batch.failed_at = at
            batch.errors = errors
            return
        batch.lines = lines
        batch.model = model
        batch.status = "in_progress"
        batch.in_progress_at = at

    def _read_input(
        self, batch: _Batch, file: _File | None
    ) -> tuple[list[dict[str, Any]], list[_Line], str | None]:
        def error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
            return {"code": code, "message": message, "param": None, "line": line}

        if file is None:
            return [error("file_not_found", "The input file was deleted.")], [], None
        s = self._settings
        errors: list[dict[str, Any]] = []
        lines: list[_Line] = []
        seen: set[str] = set()
        model: str | None = None
        inputs = 0
        for number, raw in enumerate(file.data.splitlines(), 1):
            if not raw.strip():
                continue
            if len(errors) >= 10:
                break
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            if not isinstance(item, dict):
                errors.append(
                    error("invalid_json_line", "This line is not parseable as valid JSON.", number)
                )
                continue
            custom_id, method, url, body = (
                item.get("custom_id"),
                item.get("method"),
                item.get("url"),
                item.get("body"),
            )
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(error("missing_required_parameter", "Missing 'custom_id'.", number))
                continue
            if custom_id in seen:
                errors.append(
                    error(
                        "duplicate_custom_id",
                        f"The custom_id '{custom_id}' is used more than once in this file.",
                        number,
                    )
                )
                continue
            seen.add(custom_id)
            if method != "POST":
                errors.append(
                    error("invalid_method", f"Invalid method {method!r}: only POST.", number)
                )
                continue
            if url != batch.endpoint:
                errors.append(
                    error(
                        "url_mismatch",
                        f"The url {url!r} does not match the batch endpoint {batch.endpoint!r}.",
                        number,
                    )
                )
                continue
            if not isinstance(body, dict):
                errors.append(error("missing_required_parameter", "Missing 'body'.", number))
                continue
            line_model = body.get("model")
            if model is None and isinstance(line_model, str):
                model = line_model
            elif line_model != model:
                errors.append(
                    error(
                        "model_mismatch",
                        f"The model {line_model!r} differs from the batch's model {model!r}.",
                        number,
                    )
                )
                continue
            encoded = json.dumps(body).encode()
            parsed = parse_request("POST", url, encoded)
            count = max(1, parsed.n_inputs) if url == "/v1/embeddings" else 0
            inputs += count
            lines.append(_Line(number, custom_id, parsed, parsed.prompt_tokens, count))
        if not errors and not lines:
            errors.append(error("empty_file", "The input file is empty."))
        if not errors and len(lines) > s.max_lines:
            errors.append(
                error(
                    "too_many_tasks",
                    f"The input file has {len(lines)} requests; a batch takes at most "
                    f"{s.max_lines}.",
                )
            )
        if not errors and inputs > s.max_embedding_inputs:
            errors.append(
                error(
                    "too_many_tasks",
                    f"The batch has {inputs} embedding inputs; a batch takes at most "
                    f"{s.max_embedding_inputs}.",
                )
            )
        return errors, lines, model

    def _run_lines(self, batch: _Batch, target: int) -> None:
        while batch.done < target:
            line = batch.lines[batch.done]
            batch.done += 1
            status, body, prompt, completion = self._run_line(line)
            number = next(self._numbers)
            record = (
                b'{"id":"batch_req_%024x","custom_id":%s,"response":{"status_code":%d,'
                b'"request_id":"req_%024x","body":%s},"error":null}'
                % (number, json.dumps(line.custom_id).encode(), status, number, body)
            )
            if 200 <= status < 300:
                batch.output.append(record)
                batch.completed_lines += 1
                batch.input_tokens += prompt
                batch.output_tokens += completion
            else:
                batch.errors_out.append(record)
                batch.failed_lines += 1

    def _run_line(self, line: _Line) -> tuple[int, bytes, int, int]:
        """Run one line through the server's handlers: (status, body, prompt, completion)."""
        fault = None
        queue = self._line_faults.get(line.custom_id)
        if queue:
            fault = queue.popleft()
        if fault is not None and fault[0] == "status":
            return fault[1], Fault.status(fault[1]).body, 0, 0
        api = line.request
        if api.error is not None:
            return api.error.status, api.error.body, 0, 0
        marker = self._poison
        if marker is not None and any(marker in text for text in api.texts):
            reply = error_reply(
                400,
                f"Invalid input: the request contains the poison marker {marker!r}.",
                "invalid_request_error",
                None,
                "input" if api.endpoint == "embeddings" else "messages",
            )
            return 400, reply.body, 0, 0
        if api.payload.get("stream"):
            reply = error_reply(400, "Streaming is not supported in the Batch API.", param="stream")
            return 400, reply.body, 0, 0
        reply = respond(api, next(self._numbers))
        if api.endpoint == "embeddings" and fault is None:
            return reply.status, reply.body, reply.prompt_tokens, 0
        document = json.loads(reply.body)
        completion = 0
        if api.endpoint == "chat":
            completion = int(document["usage"]["completion_tokens"])
        if fault is not None:  # corrupt: a 200 that must not be taken as data
            if api.endpoint == "embeddings":
                for entry in document["data"]:
                    entry["embedding"] = []
            else:
                for choice in document["choices"]:
                    choice["message"]["content"] = ""
            return 200, json.dumps(document).encode(), reply.prompt_tokens, completion
        return reply.status, reply.body, reply.prompt_tokens, completion

    def _end(self, batch: _Batch, status: str, at: int) -> None:
        unfinished = batch.lines[batch.done :]
        if status in ("expired", "cancelled"):
            code, message = (
                (
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                )
                if status == "expired"
                else ("batch_cancelled", "This request was not executed: the batch was cancelled.")
            )
            for line in unfinished:
                batch.errors_out.append(
                    b'{"id":"batch_req_%024x","custom_id":%s,"response":null,"error":%s}'
                    % (
                        next(self._numbers),
                        json.dumps(line.custom_id).encode(),
                        json.dumps({"code": code, "message": message}).encode(),
                    )
                )
                batch.failed_lines += 1
            batch.done = len(batch.lines)
        if self._settings.shuffle:
            self._rng.shuffle(batch.output)
            self._rng.shuffle(batch.errors_out)
        batch.output_file_id = self._store_result(f"{batch.id}_output.jsonl", batch.output)
        batch.error_file_id = self._store_result(f"{batch.id}_error.jsonl", batch.errors_out)
        batch.output, batch.errors_out = [], []
        batch.status = status
        setattr(batch, f"{status}_at", at)


# ---------------------------------------------------------------------- helpers


def _json(document: Mapping[str, Any]) -> Reply:
    return Reply(200, JSON_HEADERS, json.dumps(document).encode())


def _invalid(message: str, param: str | None = None) -> Reply:
    return error_reply(400, message, "invalid_request_error", None, param)


def _not_found(kind: str, object_id: str) -> Reply:
    message = (
        f"No such File object: {object_id}"
        if kind == "File"
        else f"No batch found with id '{object_id}'."
    )
    return error_reply(404, message, "invalid_request_error", None, "id")


def _bad_method(method: str, path: str) -> Reply:
    return error_reply(405, f"Invalid method for URL ({method} {path})")


def _limit(raw: str | None, default: int, maximum: int) -> int | None:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= maximum else None


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> Reply:
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    chosen = items[start : start + limit]
    return _json(
        {
            "object": "list",
            "data": chosen,
            "first_id": chosen[0]["id"] if chosen else None,
            "last_id": chosen[-1]["id"] if chosen else None,
            "has_more": start + limit < len(items),
        }
    )


def _check_metadata(metadata: object) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid 'metadata': expected an object of string values."
    if len(metadata) > 16:
        return f"Invalid 'metadata': at most 16 keys, got {len(metadata)}."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': key {key[:20]!r}... is longer than 64 characters."
        if not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata': the value of {key!r} must be a string of <= 512 chars."
    return None


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """Parse a multipart/form-data body: field name -> (filename or None, bytes)."""
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in rest.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            return None
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = ""
        for header in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = header.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        name: str | None = None
        filename: str | None = None
        for param in disposition.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            value = value.strip('"')
            if key == "name":
                name = value
            elif key == "filename":
                filename = value
        if name is not None:
            fields[name] = (filename, content)
    return fields
