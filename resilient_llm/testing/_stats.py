"""Counters and the request log of the loopback server.

The server's event loop is the only writer (besides `reset`); tests read from other threads.
Writers take the lock and publish a fresh dict instead of mutating a published one, so a reader
never sees a dict change size under it and needs no lock for a single field.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, fields


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the server received.

    Attributes:
        path: Request path without the query string, e.g. ``/v1/embeddings``.
        method: HTTP method.
        status: Status answered, or None when no complete response went out (reset, hang,
            client gone).
        n_inputs: Embedding inputs, or chat messages, in the request.
        body_bytes: Size of the request body.
        model: The ``model`` field of the body, if any.
        texts: The input texts (embedding inputs, chat message contents) when the server was
            made with ``record_texts=True``; otherwise None.
        started: `time.monotonic()` when the request had been read.
        duration: Seconds from `started` to the response (or to giving up on it).
        fault: Name of the injected fault, or None.
        wall_time: `time.time()` when the request had been read (for comparing with logs and
            with other processes).
        prompt_tokens: The server's estimate of the prompt tokens the request asks for,
            whatever its outcome (what a token rate limit counts).
        size_limit: Which size limit refused the request: ``"inputs"`` (too many embedding
            inputs), ``"bytes"`` (body too large), ``"input_tokens"`` (an input over the
            context) or ``"request_tokens"`` (over the tokens per request); None otherwise.
        client_closed: The client closed the connection before the response was complete
            (it gave up on a slow or hung answer, or stopped reading a stream). A stream sent
            at full speed is usually all in the socket buffers before a client can stop
            reading: pace it (``stream_chunk_interval``, `Fault.slow_chunks`) to see the close.
        chunks_sent: For a streamed answer, the events written before it ended or broke;
            None for a non-streamed answer.
    """

    path: str
    method: str
    status: int | None
    n_inputs: int
    body_bytes: int
    model: str | None
    texts: tuple[str, ...] | None
    started: float
    duration: float
    fault: str | None
    wall_time: float = 0.0
    prompt_tokens: int = 0
    size_limit: str | None = None
    client_closed: bool = False
    chunks_sent: int | None = None


@dataclass
class ServerStats:
    """Live counters of a `MockOpenAIServer`, exact under concurrency.

    Attributes:
        total_requests: Requests read completely.
        requests_by_path: Requests per path.
        responses_by_status: Responses per status (resets and hangs have none).
        in_flight: Requests read and not yet answered.
        peak_in_flight: Highest `in_flight` seen.
        connections_opened: TCP connections accepted.
        open_connections: TCP connections currently open (the server notices a client's close
            asynchronously, so poll this one).
        faults_injected: Faults applied, by `Fault.name`.
        prompt_tokens: Prompt tokens billed in successful embedding and chat responses.
        size_refusals: Requests refused for their size (see `RequestRecord.size_limit`).
        client_disconnects: Requests whose client closed the connection before the response
            was complete (see `RequestRecord.client_closed`).
    """

    total_requests: int = 0
    requests_by_path: dict[str, int] = field(default_factory=dict)
    responses_by_status: dict[int, int] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0
    connections_opened: int = 0
    open_connections: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    size_refusals: int = 0
    client_disconnects: int = 0

    def __post_init__(self) -> None:
        # Not a field: `dataclasses.asdict`, `replace` and `==` see only the counters.
        self._lock = threading.Lock()

    def snapshot(self) -> ServerStats:
        """Return a consistent copy of all counters, taken at one instant.

        Returns:
            A new, detached `ServerStats`.
        """
        with self._lock:
            return ServerStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def _reset(self) -> None:
        # Gauges describe the present, so they survive a reset.
        with self._lock:
            self.total_requests = 0
            self.requests_by_path = {}
            self.responses_by_status = {}
            self.peak_in_flight = self.in_flight
            self.connections_opened = 0
            self.faults_injected = {}
            self.prompt_tokens = 0
            self.size_refusals = 0
            self.client_disconnects = 0

    def _connection_opened(self) -> None:
        with self._lock:
            self.connections_opened += 1
            self.open_connections += 1

    def _connection_closed(self) -> None:
        with self._lock:
            self.open_connections -= 1

    def _request_started(self, path: str) -> None:
        with self._lock:
            self.total_requests += 1
            by_path = dict(self.requests_by_path)
            by_path[path] = by_path.get(path, 0) + 1
            self.requests_by_path = by_path
            self.in_flight += 1
            if self.in_flight > self.peak_in_flight:
                self.peak_in_flight = self.in_flight

    def _fault_applied(self, name: str) -> None:
        with self._lock:
            by_fault = dict(self.faults_injected)
            by_fault[name] = by_fault.get(name, 0) + 1
            self.faults_injected = by_fault

    def _request_finished(
        self, status: int | None, prompt_tokens: int, size_refused: bool, client_closed: bool
    ) -> None:
        with self._lock:
            self.in_flight -= 1
            self.size_refusals += size_refused
            self.client_disconnects += client_closed
            if status is not None:
                by_status = dict(self.responses_by_status)
                by_status[status] = by_status.get(status, 0) + 1
                self.responses_by_status = by_status
            self.prompt_tokens += prompt_tokens


class RequestLog:
    """The server's `RequestRecord`s, in the order requests finished: appended by its loop, read
    and cleared from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        """A copy of the log."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records = []


def max_in_window(events: Iterable[tuple[float, int]], seconds: float) -> int:
    """The largest total weight of events that fit in any window of `seconds`.

    A window holds the events stamped in ``[t, t + seconds)``: two events exactly `seconds`
    apart never share one, as with a sliding rate-limit window of that length.

    Args:
        events: ``(timestamp, weight)`` pairs, in any order.
        seconds: Window length, > 0.

    Returns:
        The maximum total weight (0 without events).

    Raises:
        ValueError: If `seconds` is not positive.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    ordered = sorted(events)
    best = total = left = 0
    for stamp, weight in ordered:
        total += weight
        while stamp - ordered[left][0] >= seconds:
            total -= ordered[left][1]
            left += 1
        best = max(best, total)
    return best
