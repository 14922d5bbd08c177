"""HTTP/1.1 on a non-blocking socket: requests read with h11, replies framed as bytes, and the
socket waits a fault needs (a pause that notices the client leaving)."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from dataclasses import dataclass
from http import HTTPStatus

import anyio
import anyio.lowlevel
import h11

from ._reply import Reply, error_reply

__all__ = [
    "LINGER_RESET",
    "Wire",
    "bad_request",
    "frame",
    "next_cycle",
    "pause",
    "read_request",
    "send_all",
]

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}
_RECV_SIZE = 65536
# struct linger {on, seconds}: on with zero seconds makes close() send RST instead of FIN.
LINGER_RESET = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)


async def read_request(
    sock: socket.socket, conn: h11.Connection
) -> tuple[h11.Request, bytes] | None:
    """Read the next request and its body; None when the client closed the connection."""
    request: h11.Request | None = None
    body: list[bytes] = []
    waited = continued = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue and not continued:
                continued = True
                await send_all(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
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


@dataclass(slots=True)
class Wire:
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


def frame(reply: Reply, keep_alive: bool, chunked: bool, with_body: bool = True) -> Wire:
    """Frame `reply` as HTTP/1.1 bytes."""
    head = _STATUS_LINES.get(reply.status) or _status_line(reply.status)
    headers = reply.headers
    if reply.chunks is None:
        close = b"" if keep_alive else b"connection: close\r\n"
        length = b"content-length: %d\r\n\r\n" % len(reply.body)
        body = [reply.body] if with_body and reply.body else []
        return Wire(b"".join((head, headers, close, length)), body, b"", keep_alive)
    if not with_body:
        return Wire(b"".join((head, headers, b"connection: close\r\n\r\n")), [], b"", False)
    events = [chunk for chunk in reply.chunks if chunk]
    if not chunked:
        # HTTP/1.0 has no chunked encoding: the end of the stream is the end of the connection.
        start = b"".join((head, headers, b"connection: close\r\n\r\n"))
        return Wire(start, events, b"", False)
    close = b"" if keep_alive else b"connection: close\r\n"
    start = b"".join((head, headers, close, b"transfer-encoding: chunked\r\n\r\n"))
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in events]
    return Wire(start, framed, b"0\r\n\r\n", keep_alive)


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))


def next_cycle(conn: h11.Connection) -> h11.Connection:
    """A fresh parser for the next request, fed whatever the client already sent after this one.

    Responses are framed by `frame`, not by h11, so h11 never sees them and cannot start the
    next cycle itself.
    """
    data, closed = conn.trailing_data
    fresh = h11.Connection(h11.SERVER)
    if data:
        fresh.receive_data(data)
    if closed:
        fresh.receive_data(b"")
    return fresh


async def bad_request(sock: socket.socket, exc: h11.RemoteProtocolError) -> None:
    status = exc.error_status_hint
    reply = error_reply(status, f"Malformed HTTP request: {exc}")
    with contextlib.suppress(OSError):
        await send_all(sock, frame(reply, False, True).joined())


async def send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await anyio.wait_writable(sock)
            continue
        view = view[sent:]


async def pause(sock: socket.socket, seconds: float) -> bool:
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
