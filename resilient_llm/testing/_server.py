"""`MockOpenAIServer`: a real HTTP/1.1 server on loopback that speaks OpenAI's API and misbehaves
on demand.

It runs its own event loop (anyio, asyncio backend) in one background thread, reached through an
anyio blocking portal. Its parts: `_connection` (the listening socket and connections, plain
non-blocking sockets: owning the socket is what lets a fault write one byte at a time or abort
with a TCP RST), `_wire` (h11 parses requests; responses are written as pre-encoded bytes, which
keeps the per-request path short and every byte on the wire under the server's control),
`_exchange` (one request: its fault, delay and record), `_router` (what it is answered),
`_delivery` (how the answer goes out) and `_script` (which fault a request gets).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import threading
from collections.abc import Sequence
from types import TracebackType

import anyio
import anyio.from_thread

from ._batches import BatchEmulator
from ._connection import bind, serve
from ._exchange import Exchange, Latency
from ._faults import Fault, check_seconds
from ._limits import SizeLimits, SizeLimitStyle
from ._ratelimit import SlidingWindowLimiter
from ._router import Router
from ._script import FaultScript, normalize_path
from ._stats import RequestLog, RequestRecord, ServerStats, max_in_window

__all__ = ["MockOpenAIServer"]


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
        chunk_interval = check_seconds("stream_chunk_interval", stream_chunk_interval)
        limits = SizeLimits(
            max_inputs_per_request, max_request_bytes, max_input_tokens, size_limit_style
        )
        self.host = host
        self._requested_port = port
        checked_latency = _check_latency(latency)
        # Two generators, so that switching latency to a range leaves the fault sequence alone.
        latency_rng = random.Random(None if seed is None else f"latency:{seed}")
        fault_rng = random.Random(None if seed is None else f"faults:{seed}")
        self._faults = FaultScript(fail_rate, random_faults, fault_rng)
        limiter = (
            SlidingWindowLimiter(rpm, tpm, rate_window)
            if rpm is not None or tpm is not None
            else None
        )
        #: The Batch API (`/v1/files`, `/v1/batches`): its clock, faults and contents.
        self.batches = BatchEmulator(self, poison_marker=poison_marker)
        router = Router(
            limits if limits != SizeLimits(style=size_limit_style) else None,
            None if api_key is None else f"Bearer {api_key}".encode(),
            poison_marker,
            limiter,
            self.batches,
        )
        self._stats = ServerStats()
        self._log = RequestLog()
        self._exchange = Exchange(
            router=router,
            faults=self._faults,
            stats=self._stats,
            log=self._log,
            latency=checked_latency,
            latency_rng=latency_rng,
            record_texts=record_texts,
            echo_authorization=bool(echo_authorization),
            chunk_interval=chunk_interval,
        )

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
        return self._log.records()

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue faults, consumed one per request, first in first out.

        Args:
            *faults: The faults, in order.
            path: Only requests to this path (e.g. ``"/v1/embeddings"``) consume them; such a
                queue is used before the global one.
        """
        self._faults.add(faults, path)

    def clear_faults(self) -> None:
        """Drop every scripted fault not consumed yet."""
        self._faults.clear()

    def pending_faults(self, path: str | None = None) -> int:
        """Count scripted faults not consumed yet.

        Args:
            path: Count that path's queue only; None counts every queue.

        Returns:
            The number of faults still queued.
        """
        return self._faults.pending(path)

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
        wanted = None if path is None else normalize_path(path)
        return [
            r
            for r in self.requests
            if (wanted is None or r.path == wanted) and (status is None or r.status == status)
        ]

    def reset_stats(self) -> None:
        """Zero the counters and clear the request log (gauges such as `in_flight` remain)."""
        self._log.clear()
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
            listener = bind(self.host, self._port or self._requested_port)
            self._port = listener.getsockname()[1]
            stack = contextlib.ExitStack()
            try:
                portal = stack.enter_context(
                    anyio.from_thread.start_blocking_portal(
                        "asyncio", name=f"resilient-llm-mock-server:{self._port}"
                    )
                )
                serving = functools.partial(serve, listener, self._stats, self._exchange.handle)
                _, scope = portal.start_task(serving)
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
