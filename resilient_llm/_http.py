"""The one place that knows whether openai runs on ``httpx`` (openai 2.x) or ``httpx2`` (3.x).

It builds the library's own HTTP clients of that native kind, with transports that hold every
attempt to the wall-clock deadline of the logical call it belongs to:

- each request's timeouts (connect, read, write, pool) are clamped to the budget left;
- in the sync client every socket read and write is clamped again, so a server that trickles one
  byte at a time (each byte resets the read timeout) cannot stretch a call past its deadline.
  No extra thread is involved: the check runs in the calling thread between reads.
- the async client relies on an anyio cancel scope around each attempt for the same guarantee.

The deadline travels in the context variable of :mod:`._context`, set around each attempt.

The direct route that sends on these clients without the SDK's machinery is :mod:`._direct`.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import openai

from ._context import current_scope

if TYPE_CHECKING:
    import httpcore2 as httpcore
    import httpx2 as httpx
else:

    def _native_packages() -> tuple[Any, Any]:
        for cls in openai.DefaultHttpxClient.__mro__:
            if cls.__module__.split(".")[0] == "httpx2":
                import httpcore2
                import httpx2

                return httpx2, httpcore2
        import httpcore
        import httpx

        return httpx, httpcore

    httpx, httpcore = _native_packages()

__all__ = [
    "HTTP_PACKAGE",
    "build_async_http_client",
    "build_sync_http_client",
    "prepare_tls",
    "httpcore",
    "httpx",
    "to_native_timeout",
]

HTTP_PACKAGE: str = httpx.__name__

_CANCEL_POLL = 0.2

# openai's own pool limits: plenty of connections, a bounded keep-alive set.
_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


def to_native_timeout(timeouts: Any) -> httpx.Timeout:
    """``Timeouts`` -> the native ``Timeout`` of the HTTP package openai uses."""
    return httpx.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
    )


def _budget(timeout: float | None, exc_type: type[Exception]) -> float | None:
    deadline = current_scope().deadline_at
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise exc_type("the call's deadline was reached")
    return remaining if timeout is None or timeout > remaining else timeout


def _clamp_request_timeouts(request: httpx.Request) -> None:
    deadline = current_scope().deadline_at
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise httpx.PoolTimeout("the call's deadline was reached", request=request)
    timeouts = request.extensions.get("timeout") or {}
    values = timeouts.values()
    if len(timeouts) == 4 and None not in values and max(values) <= remaining:
        return  # every timeout already ends before the deadline (the usual case)
    request.extensions["timeout"] = {
        key: remaining if value is None or value > remaining else value
        for key, value in {
            "connect": None,
            "read": None,
            "write": None,
            "pool": None,
            **timeouts,
        }.items()
    }


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write is bounded by the call's deadline."""

    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if current_scope().cancel is None:
            return self._inner.read(max_bytes, _budget(timeout, httpcore.ReadTimeout))
        return self._read_cancellable(max_bytes, timeout)

    def _read_cancellable(self, max_bytes: int, timeout: float | None) -> bytes:
        # A cancelled sync batch cannot interrupt a thread blocked in recv(); reading in short
        # slices lets it notice the cancellation within _CANCEL_POLL seconds instead.
        cancel = current_scope().cancel
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise httpcore.ReadError("the batch was cancelled")
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout("timed out")
            budget = _budget(left, httpcore.ReadTimeout)
            piece = _CANCEL_POLL if budget is None else min(budget, _CANCEL_POLL)
            try:
                return self._inner.read(max_bytes, piece)
            except httpcore.ReadTimeout:
                if budget is not None and piece >= budget:
                    raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, budget, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, budget, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpcore takes a network backend only at pool construction, which httpx does not
        # expose; wrapping the pool's backend is the one hook that sees every socket read.
        pool: Any = self._pool
        pool._network_backend = _DeadlineBackend(pool._network_backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _clamp_request_timeouts(request)
        return super().handle_request(request)


class _AsyncDeadlineTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _clamp_request_timeouts(request)
        return await super().handle_async_request(request)


def prepare_tls() -> None:
    """Build the shared TLS context now (it is built on first use otherwise)."""
    _ssl_context()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~40 ms; with one client per thread and per event loop that
    # would be paid again and again (on the event loop, for async). One context serves all.
    return httpx.create_ssl_context()


def _transport_options(options: dict[str, Any]) -> dict[str, Any]:
    # One shared TLS context (unless the caller chose its own) and openai's pool limits.
    if options.get("verify", True) is True:
        options["verify"] = _ssl_context()
    options["limits"] = _LIMITS
    options.pop("transport", None)
    return options


class _Client(openai.DefaultHttpxClient):
    """openai's client defaults with the deadline transport, for direct requests and for those
    through a proxy from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``): httpx reads the
    environment only when no transport is passed, so the transports are made here instead."""

    def _init_transport(self, **options: Any) -> Any:  # type: ignore[override]
        return _DeadlineTransport(**_transport_options(options))

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: Any, **options: Any
    ) -> Any:
        return _DeadlineTransport(**_transport_options(options), proxy=proxy)


class _AsyncClient(openai.DefaultAsyncHttpxClient):
    """The async twin of :class:`_Client`."""

    def _init_transport(self, **options: Any) -> Any:  # type: ignore[override]
        return _AsyncDeadlineTransport(**_transport_options(options))

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: Any, **options: Any
    ) -> Any:
        return _AsyncDeadlineTransport(**_transport_options(options), proxy=proxy)


def build_sync_http_client(timeouts: Any) -> httpx.Client:
    """An HTTP client with openai's defaults, our timeouts and the deadline transport."""
    client: httpx.Client = _Client(timeout=to_native_timeout(timeouts))
    return client


def build_async_http_client(timeouts: Any) -> httpx.AsyncClient:
    """The async twin of :func:`build_sync_http_client` (the deadline is a cancel scope)."""
    client: httpx.AsyncClient = _AsyncClient(timeout=to_native_timeout(timeouts))
    return client
