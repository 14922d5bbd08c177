"""The one place that knows whether openai runs on ``httpx`` (openai 2.x) or ``httpx2`` (3.x).

It builds the library's own HTTP clients of that native kind, with transports that hold every
attempt to the wall-clock deadline of the logical call it belongs to:

- each request's timeouts (connect, read, write, pool) are clamped to the budget left;
- in the sync client every socket read and write is clamped again, so a server that trickles one
  byte at a time (each byte resets the read timeout) cannot stretch a call past its deadline.
  No extra thread is involved: the check runs in the calling thread between reads.
- the async client relies on an anyio cancel scope around each attempt for the same guarantee.

The deadline travels in the context variable of :mod:`._context`, set around each attempt.

It also holds the direct route (:class:`JsonRoute`): a JSON endpoint of an official client the
library built itself, sent on that client's own HTTP client with the request the SDK would build
(URL, headers, timeout), without the SDK's per-request machinery, and failing with exactly the
exception types the SDK raises.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
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
    "JsonRoute",
    "build_async_http_client",
    "build_sync_http_client",
    "prepare_tls",
    "httpcore",
    "httpx",
    "json_route",
    "to_native_timeout",
]

HTTP_PACKAGE: str = httpx.__name__
_SDK_LOWERCASES_HEADERS = int(openai.__version__.split(".")[0]) >= 3

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


# --- the direct route --------------------------------------------------------------------------

# What the SDK turns into APIConnectionError when sending fails: openai 3.x names the HTTP
# package's request errors, TLS errors and anyio's end of stream (others propagate); openai 2.x
# wraps anything that is not its own error.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    (httpx.RequestError, ssl.SSLError, anyio.EndOfStream)
    if HTTP_PACKAGE == "httpx2"
    else (Exception,)
)


@dataclass(frozen=True, slots=True)
class JsonRoute:
    """POST JSON to one endpoint as the official client would, without its request machinery.

    The URL, headers (auth, organization, project, the SDK's platform headers, the client's
    ``default_headers``, ``x-stainless-retry-count`` and ``x-stainless-read-timeout``) and the
    timeout are the ones the SDK's ``_build_request`` makes, computed once per official client;
    each request goes through the official client's own HTTP client (``build_request``, so its
    cookies are sent, and ``send``, so its transport and redirects apply). Failures are raised as
    the SDK raises them: a non-2xx answer as the ``APIStatusError`` subclass the official client
    builds from the response, a timeout as ``APITimeoutError``, a failed send as
    ``APIConnectionError``, each chained as the SDK chains it.
    """

    http: Any
    url: httpx.URL
    headers: list[tuple[str, str]]
    timeout: Any
    # Weak: the route is cached against its official client, which must stay collectable.
    status_error: weakref.WeakMethod[Callable[[Any], Exception]]
    # The HTTP client's own headers merged with ours, as ``build_request`` merges them, when
    # nothing else of the client can change a request (no base URL or query of its own).
    merged: httpx.Headers | None = None

    def _request(self, content: bytes) -> Any:
        if self.merged is not None and not self.http.cookies:
            return httpx.Request(
                "POST",
                self.url,
                headers=self.merged,
                content=content,
                extensions={"timeout": self.timeout.as_dict()},
            )
        return self.http.build_request(
            "POST", self.url, headers=self.headers, content=content, timeout=self.timeout
        )

    def _check(self, response: Any) -> bytes:
        if not response.is_success:
            make_error = self.status_error()
            assert make_error is not None  # the caller holds the official client
            # Raised while handling the HTTP package's own error, as the SDK raises it.
            try:
                response.raise_for_status()
            except httpx.HTTPStatusError:
                raise make_error(response) from None
            raise make_error(response)
        body: bytes = response.content
        return body

    def post(self, content: bytes) -> bytes:
        """Send ``content``; the body of the 2xx answer."""
        request = self._request(content)
        try:
            response = self.http.send(request)
        except httpx.TimeoutException as err:
            raise openai.APITimeoutError(request=request) from err
        except openai.OpenAIError:
            raise
        except _CONNECTION_ERRORS as err:
            raise openai.APIConnectionError(request=request) from err
        return self._check(response)

    async def apost(self, content: bytes) -> bytes:
        """The async twin of :meth:`post`."""
        request = self._request(content)
        try:
            response = await self.http.send(request)
        except httpx.TimeoutException as err:
            raise openai.APITimeoutError(request=request) from err
        except openai.OpenAIError:
            raise
        except _CONNECTION_ERRORS as err:
            raise openai.APIConnectionError(request=request) from err
        return self._check(response)


_routes: weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple[Any, ...], JsonRoute | None]]] = (
    weakref.WeakKeyDictionary()
)
_routes_lock = threading.Lock()


def _reset_routes_lock() -> None:
    # A fork while another thread held the lock would leave the child's copy held forever.
    global _routes_lock
    _routes_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_routes_lock)


def _source(official: Any) -> tuple[Any, ...]:
    # What the route is built from: a change (a key set on `client.openai`, say) rebuilds it.
    return (
        official.api_key,
        official.base_url,
        official.organization,
        official.project,
        official.timeout,
        official._client,
    )


def _build_route(official: Any, path: str) -> JsonRoute | None:
    status_error = getattr(official, "_make_status_error_from_response", None)
    if status_error is None or official.default_query:
        return None
    configured = {**official.auth_headers, **official.default_headers}
    names = {key.lower() for key in configured}
    if (
        "Authorization" not in configured
        or len(names) < len(configured)
        or any(isinstance(value, openai.Omit) for value in configured.values())
    ):
        # No key (the SDK raises its own error about it), a header set twice in different
        # cases, or one removed with `Omit`: the SDK's major versions merge these differently,
        # so let the SDK build the request.
        return None
    # Header names as the SDK sends them: openai 2.x keeps their case, 3.x lower-cases them.
    pairs = [
        (key.lower() if _SDK_LOWERCASES_HEADERS else key, str(value))
        for key, value in configured.items()
    ]
    if "x-stainless-retry-count" not in names:
        pairs.append(("x-stainless-retry-count", "0"))
    timeout = official.timeout
    read = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
    if read is not None and "x-stainless-read-timeout" not in names:
        pairs.append(("x-stainless-read-timeout", str(read)))
    base = official.base_url
    http = official._client
    merged: httpx.Headers | None = None
    if isinstance(timeout, httpx.Timeout) and not str(http.base_url) and not http.params:
        merged = httpx.Headers(http.headers)
        merged.update(pairs)
    return JsonRoute(
        http=http,
        url=base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode("ascii")),
        headers=pairs,
        timeout=timeout,
        status_error=weakref.WeakMethod(status_error),
        merged=merged,
    )


def json_route(official: Any, path: str) -> JsonRoute | None:
    """The direct route to ``path`` of ``official`` (an official client the library built itself
    on its own HTTP client), or ``None`` where the SDK path must be used."""
    source = _source(official)
    known = _routes.get(official)
    cached = None if known is None else known.get(path)
    if cached is not None and cached[0] == source:
        return cached[1]
    route = _build_route(official, path)
    with _routes_lock:
        _routes.setdefault(official, {})[path] = (source, route)
    return route
