"""The listening socket and its connections: accept, read requests one after another, hand each
to the server's handler, close.

Connections are plain non-blocking sockets driven by `anyio.wait_readable` /
`anyio.wait_writable`: owning the socket is what lets a fault write one byte at a time or abort
with a TCP RST.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import h11

from ._stats import ServerStats
from ._wire import bad_request, next_cycle, read_request

__all__ = ["Handler", "bind", "serve"]

logger = logging.getLogger("resilient_llm.testing")

# Enough for a burst of hundreds of simultaneous connects without SYN drops (and their 1 s
# client-side retransmit); the kernel caps it at net.core.somaxconn.
_BACKLOG = 1024

#: Answers one request on its socket: (socket, request, body, keep_alive) -> whether the
#: connection may serve another.
Handler = Callable[[socket.socket, h11.Request, bytes, bool], Awaitable[bool]]


def bind(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on `host`:`port` (0: any free port)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
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
    return listener


async def serve(
    listener: socket.socket,
    stats: ServerStats,
    handle: Handler,
    *,
    task_status: anyio.abc.TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled (through the scope reported to `task_status`)."""
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                task_status.started(scope)
                while True:
                    await anyio.wait_readable(listener)
                    if not _accept_ready(listener, tg, stats, handle):
                        # Out of file descriptors or the like: retrying at once would spin.
                        await anyio.sleep(0.1)
    finally:
        listener.close()


def _accept_ready(
    listener: socket.socket, tg: anyio.abc.TaskGroup, stats: ServerStats, handle: Handler
) -> bool:
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
        stats._connection_opened()
        tg.start_soon(_connection, sock, stats, handle)


async def _connection(sock: socket.socket, stats: ServerStats, handle: Handler) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            incoming = await read_request(sock, conn)
            if incoming is None:
                return
            request, body = incoming
            # h11 has folded `Connection: close` and HTTP/1.0 into their_state.
            keep_alive = conn.their_state is h11.DONE
            if not await handle(sock, request, body, keep_alive):
                return
            conn = next_cycle(conn)
    except h11.RemoteProtocolError as exc:
        await bad_request(sock, exc)
    except OSError:
        pass  # the client went away
    except Exception:
        logger.exception("mock server: connection handler failed")
    finally:
        sock.close()
        stats._connection_closed()
