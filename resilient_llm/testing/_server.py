"""`MockOpenAIServer`: a real HTTP/1.1 server on loopback that speaks OpenAI's API and misbehaves
on demand.

It runs its own event loop (anyio, asyncio backend) in one background thread, reached through an
anyio blocking portal. Connections are plain non-blocking sockets driven by `anyio.wait_readable`
/ `anyio.wait_writable`: owning the socket is what lets a fault write one byte at a time or abort
with a TCP RST. h11 parses requests; responses are written as pre-encoded bytes, which keeps the
per-request path short and every byte on the wire under the server's control.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType

import anyio
import anyio.from_thread
import anyio.lowlevel
import h11

from ._api import ApiRequest, parse_request, respond
from ._faults import DEFAULT_RANDOM_FAULTS, Fault, header_block
from ._limits import SizeLimits, SizeLimitStyle
from ._ratelimit import RateLimited, SlidingWindowLimiter
from ._reply import Reply, error_reply
from ._stats import RequestRecord, ServerStats, max_in_window

__all__ = ["MockOpenAIServer"]

logger = logging.getLogger("resilient_llm.testing")

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}
_RECV_SIZE = 65536
# Enough for a burst of hundreds of simultaneous connects without SYN drops (and their 1 s
# client-side retransmit); the kernel caps it at net.core.somaxconn.
_BACKLOG = 1024
# struct linger {on, seconds}: on with zero seconds makes close() send RST instead of FIN.
_LINGER_RESET = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)

Latency = float | tuple[float, float]


def _normalize_path(path: str) -> str:
    path = "/" + path.split("?", 1)[0].strip("/")
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path
    return path


def _check_latency(latency: Latency) -> Latency:
    if isinstance(latency, tuple):
        lo, hi = (float(x) for x in latency)
        if not (0 <= lo <= hi and math.isfinite(hi)):
            raise ValueError(f"latency range must satisfy 0 <= lo <= hi, got {latency!r}")
        return (lo, hi)
    value = float(latency)
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"latency must be finite and >= 0, got {latency!r}")
    return value


class MockOpenAIServer:
    """An OpenAI-compatible server on loopback with fault injection, for tests and demos.

    Serves ``POST /v1/embeddings``, ``POST /v1/chat/completions`` and ``POST /v1/responses``
    (both streaming too), ``GET /v1/models`` and ``GET /v1/models/{id}`` with deterministic
    content. Use it as a context manager (or call `start` / `stop`) and point any OpenAI
    client at `base_url`.

    OpenAI's own limits always apply (2048 inputs and 300,000 tokens per embeddings request,
    8192 tokens per input, refused in OpenAI's words). The size options add a self-hosted
    server's lower limits, refused the way `size_limit_style` says (see `SizeLimits`).

    Example:
        >>> with MockOpenAIServer(latency=0.01) as server:
        ...     server.script(Fault.status(429, retry_after=0), path="/v1/embeddings")
        ...     client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")

    Args:
        host: Interface to listen on.
        port: Port, 0 for any free one. After `stop`, `start` binds the same port again.
        latency: Seconds added to every request, or ``(lo, hi)`` for a uniform random delay.
        fail_rate: Probability that a request not handled by a scripted fault gets a random one.
        random_faults: The faults drawn when `fail_rate` triggers; by default 429 (with
            ``retry-after: 0``), 500, 503 and a connection reset.
        seed: Seeds the random latency and the random faults, for reproducible runs.
        poison_marker: A request whose input or message text contains it is answered with 400
            ``invalid_request_error``; None disables this.
        rpm: Requests admitted per window; more get 429 with an exact ``retry-after``.
        tpm: Prompt tokens admitted per window; likewise.
        rate_window: Length of the sliding rate-limit window in seconds (60, as OpenAI's "per
            minute"; shorter windows make rate-limit tests fast).
        record_texts: Keep input texts in `requests`.
        api_key: If set, requests without ``Authorization: Bearer <api_key>`` get 401.
        max_inputs_per_request: Embedding inputs accepted in one request; more are refused
            for their size.
        max_request_bytes: Largest request body accepted, in bytes.
        max_input_tokens: Most tokens in one embedding input (a self-hosted model's context).
        size_limit_style: Whose words the size refusals use: ``"openai"``, ``"azure"``,
            ``"tei"`` (text-embeddings-inference), ``"vllm"`` or ``"litellm"``; a style whose
            server has no such limit refuses the option (`ValueError`).
        echo_authorization: Write the request's ``Authorization`` header into the message of
            every error response (status >= 400), as some proxies do, so tests can check that
            API keys are scrubbed from what the client reports.
        stream_chunk_interval: Seconds before each chunk of every streamed answer (the
            server-wide form of `Fault.slow_chunks`); lets a test close a stream mid-way and
            see the server notice.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: Latency = 0.0,
        fail_rate: float = 0.0,
        random_faults: Sequence[Fault] | None = None,
        seed: int | str | None = None,
        poison_marker: str | None = "POISON",
        rpm: int | None = None,
        tpm: int | None = None,
        rate_window: float = 60.0,
        record_texts: bool = False,
        api_key: str | None = None,
        max_inputs_per_request: int | None = None,
        max_request_bytes: int | None = None,
        max_input_tokens: int | None = None,
        size_limit_style: SizeLimitStyle = "openai",
        echo_authorization: bool = False,
        stream_chunk_interval: float = 0.0,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within [0, 1], got {fail_rate!r}")
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be >= 1, got {limit!r}")
        if not rate_window > 0:
            raise ValueError(f"rate_window must be > 0, got {rate_window!r}")
        if poison_marker == "":
            raise ValueError("poison_marker must be a non-empty string or None")
        if stream_chunk_interval < 0 or not math.isfinite(stream_chunk_interval):
            raise ValueError(
                f"stream_chunk_interval must be finite and >= 0, got {stream_chunk_interval!r}"
            )
        limits = SizeLimits(
            max_inputs_per_request, max_request_bytes, max_input_tokens, size_limit_style
        )
        self._limits = limits if limits != SizeLimits(style=size_limit_style) else None
        self._echo_authorization = bool(echo_authorization)
        self._chunk_interval = float(stream_chunk_interval)
        self.host = host
        self._requested_port = port
        self._latency = _check_latency(latency)
        self._fail_rate = float(fail_rate)
        self._random_faults: tuple[Fault, ...] = (
            DEFAULT_RANDOM_FAULTS if random_faults is None else tuple(random_faults)
        )
        if self._fail_rate and not self._random_faults:
            raise ValueError("fail_rate > 0 needs at least one random fault")
        # Two generators, so that switching latency to a range leaves the fault sequence alone.
        self._latency_rng = random.Random(None if seed is None else f"latency:{seed}")
        self._fault_rng = random.Random(None if seed is None else f"faults:{seed}")
        self._poison = poison_marker
        self._limiter = (
            SlidingWindowLimiter(rpm, tpm, rate_window)
            if rpm is not None or tpm is not None
            else None
        )
        self._record_texts = record_texts
        self._auth = None if api_key is None else f"Bearer {api_key}".encode()

        self._stats = ServerStats()
        self._records: list[RequestRecord] = []
        self._numbers = itertools.count(1)
        self._faults_lock = threading.Lock()
        self._global_faults: deque[Fault] = deque()
        self._path_faults: dict[str, deque[Fault]] = {}

        self._state_lock = threading.Lock()
        self._port = 0
        self._exit_stack: contextlib.ExitStack | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._scope: anyio.CancelScope | None = None

    # ---------------------------------------------------------------- public, any thread

    @property
    def port(self) -> int:
        """The bound port (known once started; kept across `stop` / `start`)."""
        if not self._port:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, what OpenAI clients take as ``base_url``."""
        return self.url + "/v1"

    @property
    def running(self) -> bool:
        """Whether the server accepts connections."""
        return self._portal is not None

    @property
    def stats(self) -> ServerStats:
        """The live counters (see `ServerStats.snapshot` for a frozen copy)."""
        return self._stats

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, in the order requests finished."""
        with self._stats._lock:
            return list(self._records)

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults, consumed one per request, first in first out.

        Args:
            *faults: The faults, in order.
            path: Only requests to this path (e.g. ``"/v1/embeddings"``) consume them; such a
                queue is used before the global one.
        """
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._faults_lock:
            if path is None:
                self._global_faults.extend(faults)
            else:
                self._path_faults.setdefault(_normalize_path(path), deque()).extend(faults)

    def clear_faults(self) -> None:
        """Drop every scripted fault not consumed yet."""
        with self._faults_lock:
            self._global_faults.clear()
            self._path_faults.clear()

    def pending_faults(self, path: str | None = None) -> int:
        """Count scripted faults not consumed yet.

        Args:
            path: Count that path's queue only; None counts every queue.

        Returns:
            The number of faults still queued.
        """
        with self._faults_lock:
            if path is not None:
                return len(self._path_faults.get(_normalize_path(path), ()))
            return len(self._global_faults) + sum(map(len, self._path_faults.values()))

    def max_requests_in_window(
        self, seconds: float, *, path: str | None = None, status: int | None = None
    ) -> int:
        """The most requests the server received within any window of `seconds`.

        Computed from the request log (arrival times on the monotonic clock), so a test can
        assert that clients sharing a rate limit never sent more than the budget per window.
        A window holds the arrivals in ``[t, t + seconds)``.

        Args:
            seconds: Window length.
            path: Count only requests to this path (e.g. ``"/v1/embeddings"``).
            status: Count only requests answered with this status (200: admitted ones).

        Returns:
            The maximum count.
        """
        return max_in_window(((r.started, 1) for r in self._select(path, status)), seconds)

    def max_tokens_in_window(
        self, seconds: float, *, path: str | None = None, status: int | None = None
    ) -> int:
        """The most prompt tokens requested within any window of `seconds`.

        Sums `RequestRecord.prompt_tokens` (the server's estimate, as its own TPM limit
        counts them) over the arrivals in ``[t, t + seconds)``.

        Args:
            seconds: Window length.
            path: Count only requests to this path.
            status: Count only requests answered with this status.

        Returns:
            The maximum total.
        """
        events = ((r.started, r.prompt_tokens) for r in self._select(path, status))
        return max_in_window(events, seconds)

    def _select(self, path: str | None, status: int | None) -> list[RequestRecord]:
        wanted = None if path is None else _normalize_path(path)
        return [
            r
            for r in self.requests
            if (wanted is None or r.path == wanted) and (status is None or r.status == status)
        ]

    def reset_stats(self) -> None:
        """Zero the counters and clear the request log (gauges such as `in_flight` remain)."""
        with self._stats._lock:
            self._records = []
        self._stats._reset()

    def start(self) -> MockOpenAIServer:
        """Bind and start serving in a background thread.

        Returns:
            The server itself.

        Raises:
            RuntimeError: If it is already running.
            OSError: If the address cannot be bound.
        """
        with self._state_lock:
            if self._portal is not None:
                raise RuntimeError("the server is already running")
            listener = self._bind()
            stack = contextlib.ExitStack()
            try:
                portal = stack.enter_context(
                    anyio.from_thread.start_blocking_portal(
                        "asyncio", name=f"resilient-llm-mock-server:{self._port}"
                    )
                )
                _, scope = portal.start_task(self._serve, listener)
            except BaseException:
                listener.close()
                stack.close()
                raise
            self._exit_stack, self._portal, self._scope = stack, portal, scope
            return self

    def stop(self) -> None:
        """Stop serving: close every connection (hanging requests too) and the thread.

        Returns once nothing of the server is left running. Idempotent.
        """
        with self._state_lock:
            portal, scope, stack = self._portal, self._scope, self._exit_stack
            self._portal = self._scope = self._exit_stack = None
            if portal is None or scope is None or stack is None:
                return
            try:
                portal.call(scope.cancel)
            finally:
                # Leaving the portal waits for every task to end, then joins the thread.
                stack.close()

    def __enter__(self) -> MockOpenAIServer:
        if self._portal is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port else "unbound"
        return f"<MockOpenAIServer {where} running={self.running}>"

    def _bind(self) -> socket.socket:
        port = self._port or self._requested_port
        family, _, _, _, address = socket.getaddrinfo(
            self.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # Rebinding the same port right after `stop` (outage tests) must not fail on
            # connections still in TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(_BACKLOG)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        return listener

    # ---------------------------------------------------------------- event loop side

    async def _serve(
        self,
        listener: socket.socket,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    task_status.started(scope)
                    while True:
                        await anyio.wait_readable(listener)
                        if not self._accept_ready(listener, tg):
                            # Out of file descriptors or the like: retrying at once would spin.
                            await anyio.sleep(0.1)
        finally:
            listener.close()

    def _accept_ready(self, listener: socket.socket, tg: anyio.abc.TaskGroup) -> bool:
        """Accept every pending connection; return False if accepting failed."""
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return True
            except OSError:
                logger.exception("mock server: accept failed")
                return False
            sock.setblocking(False)
            # Small responses and single dripped bytes must leave at once, not wait for
            # Nagle's algorithm to see an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._stats._connection_opened()
            tg.start_soon(self._connection, sock)

    async def _connection(self, sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                incoming = await self._read_request(sock, conn)
                if incoming is None:
                    return
                request, body = incoming
                # h11 has folded `Connection: close` and HTTP/1.0 into their_state.
                keep_alive = conn.their_state is h11.DONE
                if not await self._handle(sock, request, body, keep_alive):
                    return
                conn = _next_cycle(conn)
        except h11.RemoteProtocolError as exc:
            await _bad_request(sock, exc)
        except OSError:
            pass  # the client went away
        except Exception:
            logger.exception("mock server: connection handler failed")
        finally:
            sock.close()
            self._stats._connection_closed()

    async def _read_request(
        self, sock: socket.socket, conn: h11.Connection
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body: list[bytes] = []
        waited = continued = False
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue and not continued:
                    continued = True
                    await _send_all(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    data = sock.recv(_RECV_SIZE)
                except BlockingIOError:
                    waited = True
                    await anyio.wait_readable(sock)
                    continue
                except ConnectionError:
                    data = b""
                conn.receive_data(data)
            elif type(event) is h11.Request:
                request = event
            elif type(event) is h11.Data:
                body.append(event.data)
            elif type(event) is h11.EndOfMessage:
                if not waited:
                    # A client that pipelines must not monopolise the loop.
                    await anyio.lowlevel.checkpoint()
                assert request is not None
                return request, b"".join(body)
            else:
                return None  # ConnectionClosed

    def _next_fault(self, path: str) -> Fault | None:
        with self._faults_lock:
            queue = self._path_faults.get(path)
            if queue:
                return queue.popleft()
            if self._global_faults:
                return self._global_faults.popleft()
        if self._fail_rate and self._fault_rng.random() < self._fail_rate:
            return self._fault_rng.choice(self._random_faults)
        return None

    def _base_delay(self) -> float:
        latency = self._latency
        if isinstance(latency, tuple):
            return self._latency_rng.uniform(*latency)
        return latency

    async def _handle(
        self, sock: socket.socket, request: h11.Request, body: bytes, keep_alive: bool
    ) -> bool:
        """Answer one request; return whether the connection may serve another."""
        started = time.monotonic()
        wall_time = time.time()
        api = parse_request(
            request.method.decode("ascii", "replace"),
            request.target.decode("latin-1"),
            body,
            self._limits,
        )
        number = next(self._numbers)
        stats = self._stats
        stats._request_started(api.path)
        fault = self._next_fault(api.path)
        if fault is not None:
            stats._fault_applied(fault.name)
        kind = None if fault is None else fault.kind
        outcome: list[int | None] = []
        size_limit: str | None = None

        def finish(
            status: int | None,
            prompt_tokens: int = 0,
            *,
            closed: bool = False,
            chunks: int | None = None,
        ) -> None:
            # Runs before the last byte goes out, so that a client that has its answer also
            # sees it counted.
            outcome.append(status)
            record = RequestRecord(
                path=api.path,
                method=api.method,
                status=status,
                n_inputs=api.n_inputs,
                body_bytes=len(body),
                model=api.model,
                texts=tuple(api.texts) if self._record_texts else None,
                started=started,
                duration=time.monotonic() - started,
                fault=None if fault is None else fault.name,
                wall_time=wall_time,
                prompt_tokens=api.prompt_tokens,
                size_limit=size_limit,
                client_closed=closed,
                chunks_sent=chunks,
            )
            with stats._lock:
                self._records.append(record)
            stats._request_finished(status, prompt_tokens, size_limit is not None, closed)

        try:
            delay = self._base_delay()
            if fault is not None and kind == "latency":
                delay += fault.seconds
            if delay > 0 and not await _pause(sock, delay):
                finish(None, closed=True)
                return False
            if kind == "hang":
                if not await _pause(sock, math.inf):
                    finish(None, closed=True)
                return False
            if fault is not None and kind == "respond":
                reply = Reply(fault.status_code, header_block(fault.headers), fault.body)
            else:
                reply = self._answer(api, request, number, fault)
                if reply is api.error:
                    size_limit = api.size_limit
            if self._echo_authorization and reply.status >= 400:
                authorization = next((v for k, v in request.headers if k == b"authorization"), b"")
                reply = _echo_authorization(reply, authorization.decode("latin-1"))
            wire = _frame(
                reply, keep_alive, request.http_version == b"1.1", request.method != b"HEAD"
            )
            streamed = reply.chunks is not None

            if fault is not None and kind == "reset":
                if fault.after_chunks is None:
                    data = wire.joined()[: fault.after_bytes]
                    sent = wire.chunks_within(len(data)) if streamed else None
                else:
                    sent = min(fault.after_chunks, len(wire.chunks))
                    data = wire.head + b"".join(wire.chunks[:sent])
                    sent = sent if streamed else None
                finish(None, chunks=sent)
                if data:
                    await _send_all(sock, data)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                return False
            if fault is not None and kind == "drip":
                data = wire.joined()
                for i in range(len(data)):
                    if i:
                        await anyio.sleep(fault.seconds)
                    if i == len(data) - 1:
                        finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
                    await _send_all(sock, data[i : i + 1])
                return wire.keep_alive
            if fault is not None and kind == "stall":
                # A non-streamed body is one chunk, and it always stays behind.
                count = min(fault.after_chunks or 0, len(wire.chunks)) if streamed else 0
                delivered = await self._send_paced(sock, wire, count, 0.0)
                closed = delivered < count or not await _pause(sock, math.inf)
                if closed:
                    finish(None, closed=True, chunks=delivered if streamed else None)
                return False
            interval = fault.seconds if fault is not None and kind == "slow_chunks" else 0.0
            if streamed and not interval:
                interval = self._chunk_interval
            if interval:
                total = len(wire.chunks)
                # Without a terminator the last chunk is the last byte: it is counted first.
                last = total if wire.tail else max(0, total - 1)
                delivered = await self._send_paced(sock, wire, last, interval)
                complete = delivered == last
                if complete and last < total:
                    complete = await _pause(sock, interval)
                if not complete:
                    finish(None, closed=True, chunks=delivered if streamed else None)
                    return False
                finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
                await _send_all(sock, b"".join(wire.chunks[last:]) + wire.tail)
                return wire.keep_alive
            finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
            if not streamed:
                await _send_all(sock, wire.joined())
                return wire.keep_alive
            for piece in (wire.head, *wire.chunks, wire.tail):
                if piece:
                    await _send_all(sock, piece)
            return wire.keep_alive
        finally:
            if not outcome:
                finish(None)

    async def _send_paced(
        self, sock: socket.socket, wire: _Wire, count: int, interval: float
    ) -> int:
        """Send the head and the first `count` chunks, pausing `interval` before each chunk.

        Returns:
            The chunks delivered: fewer than `count` when the client closed the connection.
        """
        delivered = 0
        try:
            await _send_all(sock, wire.head)
            for chunk in wire.chunks[:count]:
                if interval and not await _pause(sock, interval):
                    break
                await _send_all(sock, chunk)
                delivered += 1
        except OSError:
            pass  # the client went away: what was delivered says how far it got
        return delivered

    def _answer(
        self, api: ApiRequest, request: h11.Request, number: int, fault: Fault | None
    ) -> Reply:
        if self._auth is not None:
            given = next((v for k, v in request.headers if k == b"authorization"), None)
            if given != self._auth:
                return error_reply(
                    401,
                    "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "authentication_error",
                    "invalid_api_key",
                )
        if api.error is not None:
            return api.error
        marker = self._poison
        if marker is not None and any(marker in text for text in api.texts):
            return error_reply(
                400,
                f"Invalid input: the request contains the poison marker {marker!r}.",
                "invalid_request_error",
                None,
                "messages" if api.endpoint == "chat" else "input",
            )
        if self._limiter is not None and api.endpoint in ("embeddings", "chat", "responses"):
            refusal = self._limiter.acquire(time.monotonic(), api.prompt_tokens)
            if refusal is not None:
                return _rate_limited(refusal, api.model)
        if fault is None or fault.kind != "alter":
            return respond(api, number)
        try:
            return respond(api, number, fault.defect, fault.at)
        except ValueError as exc:
            # A fault scripted for the wrong endpoint: say so to the test, loudly.
            logger.error("mock server: %s", exc)
            return error_reply(500, f"mock server: {exc}", "server_error")


@dataclass(slots=True)
class _Wire:
    """A reply framed as HTTP/1.1: the head, the body chunks (one per streamed event, or the
    whole body), the end of a chunked stream, and whether the connection may be reused."""

    head: bytes
    chunks: list[bytes]
    tail: bytes
    keep_alive: bool

    def joined(self) -> bytes:
        return b"".join((self.head, *self.chunks, self.tail))

    def chunks_within(self, size: int) -> int:
        """How many whole chunks the first `size` bytes hold."""
        end, count = len(self.head), 0
        for chunk in self.chunks:
            end += len(chunk)
            if end > size:
                break
            count += 1
        return count


def _count(wire: _Wire, streamed: bool) -> int | None:
    return len(wire.chunks) if streamed else None


def _frame(reply: Reply, keep_alive: bool, chunked: bool, with_body: bool = True) -> _Wire:
    """Frame `reply` as HTTP/1.1 bytes."""
    head = _STATUS_LINES.get(reply.status) or _status_line(reply.status)
    headers = reply.headers
    if reply.chunks is None:
        close = b"" if keep_alive else b"connection: close\r\n"
        length = b"content-length: %d\r\n\r\n" % len(reply.body)
        body = [reply.body] if with_body and reply.body else []
        return _Wire(b"".join((head, headers, close, length)), body, b"", keep_alive)
    if not with_body:
        return _Wire(b"".join((head, headers, b"connection: close\r\n\r\n")), [], b"", False)
    events = [chunk for chunk in reply.chunks if chunk]
    if not chunked:
        # HTTP/1.0 has no chunked encoding: the end of the stream is the end of the connection.
        start = b"".join((head, headers, b"connection: close\r\n\r\n"))
        return _Wire(start, events, b"", False)
    close = b"" if keep_alive else b"connection: close\r\n"
    start = b"".join((head, headers, close, b"transfer-encoding: chunked\r\n\r\n"))
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in events]
    return _Wire(start, framed, b"0\r\n\r\n", keep_alive)


def _echo_authorization(reply: Reply, authorization: str) -> Reply:
    """Write the request's Authorization header into an error's message, as leaky proxies do."""
    note = f" [proxy: upstream request failed; request headers: Authorization: {authorization}]"
    body = reply.body + note.encode()
    with contextlib.suppress(ValueError):
        document = json.loads(reply.body)
        holder = document.get("error") if isinstance(document, dict) else None
        if not isinstance(holder, dict):
            holder = document  # TEI-style: the message at the top level
        if isinstance(holder, dict) and isinstance(holder.get("message"), str):
            holder["message"] += note
            body = json.dumps(document).encode()
    return Reply(reply.status, reply.headers, body, reply.chunks, reply.prompt_tokens)


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))


def _next_cycle(conn: h11.Connection) -> h11.Connection:
    """A fresh parser for the next request, fed whatever the client already sent after this one.

    Responses are framed by `_frame`, not by h11, so h11 never sees them and cannot start the
    next cycle itself.
    """
    data, closed = conn.trailing_data
    fresh = h11.Connection(h11.SERVER)
    if data:
        fresh.receive_data(data)
    if closed:
        fresh.receive_data(b"")
    return fresh


async def _bad_request(sock: socket.socket, exc: h11.RemoteProtocolError) -> None:
    status = exc.error_status_hint
    reply = error_reply(status, f"Malformed HTTP request: {exc}")
    with contextlib.suppress(OSError):
        await _send_all(sock, _frame(reply, False, True).joined())


def _rate_limited(refusal: RateLimited, model: str | None) -> Reply:
    unit = "requests per min (RPM)" if refusal.kind == "requests" else "tokens per min (TPM)"
    headers = [
        (f"x-ratelimit-limit-{refusal.kind}", str(refusal.limit)),
        (f"x-ratelimit-remaining-{refusal.kind}", str(max(0, refusal.limit - refusal.used))),
    ]
    if refusal.retry_after is None:
        hint = "The request is larger than the limit and can never be admitted."
    else:
        wait = max(0.0, refusal.retry_after)
        hint = f"Please try again in {wait:.3f}s."
        # Retry-After takes whole seconds (rounded up, never early); the ms header is exact.
        headers.append(("retry-after", str(math.ceil(wait))))
        headers.append(("retry-after-ms", str(math.ceil(wait * 1000))))
        headers.append((f"x-ratelimit-reset-{refusal.kind}", f"{wait:.3f}s"))
    message = (
        f"Rate limit reached for {model} on {unit}: Limit {refusal.limit}, Used {refusal.used}, "
        f"Requested {refusal.requested}. {hint}"
    )
    return error_reply(
        429, message, refusal.kind, "rate_limit_exceeded", None, header_block(headers)
    )


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            continue
        view = view[sent:]


async def _pause(sock: socket.socket, seconds: float) -> bool:
    """Sleep, but return False as soon as the client closes its end of the connection."""
    with anyio.move_on_after(seconds):
        while True:
            await anyio.wait_readable(sock)
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if not peeked:
                return False
            # The client sent more (pipelining): nothing left to watch, just wait.
            await anyio.sleep_forever()
    return True
