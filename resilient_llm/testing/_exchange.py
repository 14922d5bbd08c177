"""One request on its connection, from the bytes read to the reply sent: its number, its fault,
its delay, its answer and the record the server keeps of it."""

from __future__ import annotations

import itertools
import math
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import h11

from ._delivery import deliver
from ._reply import Reply, header_block
from ._router import Router, echo_authorization
from ._script import FaultScript
from ._stats import RequestLog, RequestRecord, ServerStats
from ._wire import frame, pause

__all__ = ["Exchange", "Latency"]

Latency = float | tuple[float, float]


@dataclass(eq=False, kw_only=True)
class Exchange:
    """Handles the requests of a `MockOpenAIServer`, one call of `handle` each.

    Attributes:
        router: Answers a request.
        faults: Gives each request its fault.
        stats: The counters.
        log: The request log.
        latency: Seconds before every answer, or ``(lo, hi)`` for a uniform random delay.
        latency_rng: Draws the random delays.
        record_texts: Keep input texts in the log.
        echo_authorization: Write the request's ``Authorization`` into every error.
        chunk_interval: Seconds before each chunk of a streamed answer.
    """

    router: Router
    faults: FaultScript
    stats: ServerStats
    log: RequestLog
    latency: Latency
    latency_rng: random.Random
    record_texts: bool
    echo_authorization: bool
    chunk_interval: float
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False)

    def _base_delay(self) -> float:
        latency = self.latency
        if isinstance(latency, tuple):
            return self.latency_rng.uniform(*latency)
        return latency

    async def handle(
        self, sock: socket.socket, request: h11.Request, body: bytes, keep_alive: bool
    ) -> bool:
        """Answer one request; return whether the connection may serve another."""
        started = time.monotonic()
        wall_time = time.time()
        api = self.router.parse(request, body)
        number = next(self._numbers)
        stats = self.stats
        stats._request_started(api.path)
        fault = self.faults.next(api.path)
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
                texts=tuple(api.texts) if self.record_texts else None,
                started=started,
                duration=time.monotonic() - started,
                fault=None if fault is None else fault.name,
                wall_time=wall_time,
                prompt_tokens=api.prompt_tokens,
                size_limit=size_limit,
                client_closed=closed,
                chunks_sent=chunks,
            )
            self.log.append(record)
            stats._request_finished(status, prompt_tokens, size_limit is not None, closed)

        try:
            delay = self._base_delay()
            if fault is not None and kind == "latency":
                delay += fault.seconds
            if delay > 0 and not await pause(sock, delay):
                finish(None, closed=True)
                return False
            if kind == "hang":
                if not await pause(sock, math.inf):
                    finish(None, closed=True)
                return False
            if fault is not None and kind == "respond":
                reply = Reply(fault.status_code, header_block(fault.headers), fault.body)
            else:
                reply = self.router.answer(api, request, number, fault, body)
                if reply is api.error:
                    size_limit = api.size_limit
            if self.echo_authorization and reply.status >= 400:
                authorization = next((v for k, v in request.headers if k == b"authorization"), b"")
                reply = echo_authorization(reply, authorization.decode("latin-1"))
            wire = frame(
                reply, keep_alive, request.http_version == b"1.1", request.method != b"HEAD"
            )
            return await deliver(sock, reply, wire, fault, finish, self.chunk_interval)
        finally:
            if not outcome:
                finish(None)
