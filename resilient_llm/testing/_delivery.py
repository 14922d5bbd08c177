"""How a framed reply goes out on its socket: whole, or as a fault shapes it (cut off by a reset,
dripped a byte at a time, stalled after some chunks, or paced chunk by chunk)."""

from __future__ import annotations

import math
import socket
from typing import Protocol

import anyio

from ._faults import Fault
from ._reply import Reply
from ._wire import LINGER_RESET, Wire, pause, send_all

__all__ = ["Finish", "deliver"]


class Finish(Protocol):
    """Records how the request ended; called before the last byte a client needs goes out (of
    a stream, before its last event: a client may stop there without reading the terminator).

    Args:
        status: The status answered, or None when no complete response went out.
        prompt_tokens: The tokens the answer billed.
        closed: Whether the client closed the connection first.
        chunks: Chunks delivered, for a streamed answer.
    """

    def __call__(
        self,
        status: int | None,
        prompt_tokens: int = 0,
        *,
        closed: bool = False,
        chunks: int | None = None,
    ) -> None: ...


async def deliver(
    sock: socket.socket,
    reply: Reply,
    wire: Wire,
    fault: Fault | None,
    finish: Finish,
    chunk_interval: float,
) -> bool:
    """Send `wire` (`reply` framed) as `fault` says; return whether the connection may be reused.

    Args:
        sock: The client's socket.
        reply: The reply.
        wire: The reply framed.
        fault: The request's fault: ``reset``, ``drip``, ``stall`` and ``slow_chunks`` shape the
            sending; others (or None) send it whole.
        finish: Records the outcome.
        chunk_interval: The server's pause before each chunk of a streamed answer.
    """
    kind = None if fault is None else fault.kind
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
            await send_all(sock, data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        return False
    if fault is not None and kind == "drip":
        data = wire.joined()
        # Counted before the last byte a client reads: of a stream, its last event's first byte.
        counted_at = len(data) - 1
        if streamed and wire.chunks:
            counted_at = len(data) - len(wire.tail) - len(wire.chunks[-1])
        for i in range(len(data)):
            if i:
                await anyio.sleep(fault.seconds)
            if i == counted_at:
                finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
            await send_all(sock, data[i : i + 1])
        return wire.keep_alive
    if fault is not None and kind == "stall":
        # A non-streamed body is one chunk, and it always stays behind.
        count = min(fault.after_chunks or 0, len(wire.chunks)) if streamed else 0
        delivered = await _send_paced(sock, wire, count, 0.0)
        closed = delivered < count or not await pause(sock, math.inf)
        if closed:
            finish(None, closed=True, chunks=delivered if streamed else None)
        return False
    interval = fault.seconds if fault is not None and kind == "slow_chunks" else 0.0
    if streamed and not interval:
        interval = chunk_interval
    if interval:
        total = len(wire.chunks)
        # A client may stop at the last event (SSE's ``[DONE]``) without reading the chunked
        # terminator, so the answer is counted before its last chunk goes out.
        last = max(0, total - 1)
        delivered = await _send_paced(sock, wire, last, interval)
        complete = delivered == last
        if complete and last < total:
            complete = await pause(sock, interval)
        if not complete:
            finish(None, closed=True, chunks=delivered if streamed else None)
            return False
        finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
        await send_all(sock, b"".join(wire.chunks[last:]) + wire.tail)
        return wire.keep_alive
    finish(reply.status, reply.prompt_tokens, chunks=_count(wire, streamed))
    if not streamed:
        await send_all(sock, wire.joined())
        return wire.keep_alive
    for piece in (wire.head, *wire.chunks, wire.tail):
        if piece:
            await send_all(sock, piece)
    return wire.keep_alive


def _count(wire: Wire, streamed: bool) -> int | None:
    return len(wire.chunks) if streamed else None


async def _send_paced(sock: socket.socket, wire: Wire, count: int, interval: float) -> int:
    """Send the head and the first `count` chunks, pausing `interval` before each chunk.

    Returns:
        The chunks delivered: fewer than `count` when the client closed the connection.
    """
    delivered = 0
    try:
        await send_all(sock, wire.head)
        for chunk in wire.chunks[:count]:
            if interval and not await pause(sock, interval):
                break
            await send_all(sock, chunk)
            delivered += 1
    except OSError:
        pass  # the client went away: what was delivered says how far it got
    return delivered
