"""`BatchEmulator`: the Batch API of a `MockOpenAIServer`, as a test and the server reach it."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

from .._faults import Fault, check_seconds
from .._reply import Reply, error_reply
from .._script import check_faults
from .files import files_route
from .jobs import batches_route
from .lifecycle import tick
from .records import BatchFault, LineFaultKind
from .state import State

if TYPE_CHECKING:
    from .._server import MockOpenAIServer

__all__ = ["BatchEmulator"]


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
        self._state = State(server, poison_marker)

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
        current = self._state.settings
        with self._state.lock:
            for name, value in settings.items():
                if not hasattr(current, name):
                    raise TypeError(f"unknown batch setting {name!r}")
                if name == "shuffle":
                    current.shuffle = bool(value)
                    continue
                if name == "enqueued_token_limit" and value is None:
                    current.enqueued_token_limit = None
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{name} must be a number, got {value!r}")
                check_seconds(name, value)
                counted = name.startswith("max_") or name == "enqueued_token_limit"
                if counted and (not isinstance(value, int) or value < 1):
                    raise ValueError(f"{name} must be an int >= 1, got {value!r}")
                setattr(current, name, value)

    @property
    def available(self) -> bool:
        """Whether the server has a Batch API; ``False`` answers 404, as vLLM and Ollama do."""
        return self._state.available

    @available.setter
    def available(self, value: bool) -> None:
        self._state.available = bool(value)

    @property
    def now(self) -> float:
        """The emulator's clock: wall-clock time plus every `advance`."""
        return self._state.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward and bring every batch up to date.

        Args:
            seconds: how far, >= 0.
        """
        check_seconds("seconds", seconds)
        with self._state.lock:
            self._state.offset += seconds
            tick(self._state)

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
        with self._state.lock:
            self._state.batch_faults.append(BatchFault("fail", errors=(error,)))

    def expire_next_batch(self, after_lines: int = 0) -> None:
        """The next batch created runs `after_lines` lines, then expires at once."""
        self._queue_stall("expire", after_lines)

    def cancel_next_batch(self, after_lines: int = 0) -> None:
        """The next batch created runs `after_lines` lines, then is cancelled by the system."""
        self._queue_stall("cancel", after_lines)

    def _queue_stall(self, kind: Literal["expire", "cancel"], after_lines: int) -> None:
        if isinstance(after_lines, bool) or not isinstance(after_lines, int) or after_lines < 0:
            raise ValueError(f"after_lines must be an int >= 0, got {after_lines!r}")
        with self._state.lock:
            self._state.batch_faults.append(BatchFault(kind, after_lines=after_lines))

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
        with self._state.lock:
            for custom_id in custom_ids:
                self._state.line_faults.setdefault(str(custom_id), deque()).extend([fault] * times)

    def fault_downloads(self, *faults: Fault) -> None:
        """Apply these server faults, one each, to the downloads of the next result files.

        Each output or error file a batch writes from now on takes the next fault, scripted on
        its ``/v1/files/{id}/content`` path (``Fault.drip(0.01)`` makes a download slow
        enough to kill the client in the middle of it).
        """
        check_faults(faults)
        with self._state.lock:
            self._state.download_faults.extend(faults)

    # ------------------------------------------------------------------ inspection

    def batches(self) -> list[dict[str, Any]]:
        """Every batch as the API shows it now, oldest first."""
        with self._state.lock:
            tick(self._state)
            return [b.view() for b in self._state.oldest_first()]

    def batch(self, batch_id: str) -> dict[str, Any]:
        """One batch as the API shows it now.

        Raises:
            KeyError: no such batch.
        """
        with self._state.lock:
            tick(self._state)
            return self._state.batches[batch_id].view()

    def files(self) -> list[dict[str, Any]]:
        """Every stored file (input, output and error files) as the API shows it."""
        with self._state.lock:
            return [f.view() for f in self._state.files.values()]

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a stored file.

        Raises:
            KeyError: no such file.
        """
        with self._state.lock:
            return self._state.files[file_id].data

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The parsed lines of a batch's input file."""
        with self._state.lock:
            data = self._state.files[self._state.batches[batch_id].input_file_id].data
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    @property
    def peak_in_progress(self) -> int:
        """The most batches seen ``in_progress`` or ``finalizing`` at once."""
        return self._state.peak_in_progress

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
        if not self._state.available:
            return error_reply(404, f"Invalid URL ({method} {path})")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        parts = path.strip("/").split("/")[1:]  # without "v1"
        with self._state.lock:
            if parts[0] == "files":
                return files_route(self._state, method, parts[1:], params, headers, body)
            return batches_route(self._state, method, parts[1:], params, body)
