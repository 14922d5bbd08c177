"""The direct route: an embeddings request sent as the SDK would send it, without its machinery.

On clients the library builds itself, :func:`json_route` gives the official client's endpoint
as a :class:`JsonRoute`: the URL, headers and timeout the SDK's ``_build_request`` makes,
computed once per official client, and failures raised as the SDK raises them. Anything the
route cannot reproduce exactly (a header set twice in different cases, ``Omit``, a default
query) returns ``None``, and the call goes through the SDK.
"""

from __future__ import annotations

import os
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import openai

from ._http import HTTP_PACKAGE, httpx

__all__ = ["JsonRoute", "json_route"]

_SDK_LOWERCASES_HEADERS = int(openai.__version__.split(".")[0]) >= 3

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
    # In the SDK's order: its defaults hold the auth headers, where they sit in each version.
    configured = dict(official.default_headers)
    if "Authorization" not in configured:
        configured = {**official.auth_headers, **configured}
    names = {key.lower() for key in configured}
    if len(names) < len(configured):
        # A header set twice in different cases: the SDK's major versions merge these
        # differently (3.x case-insensitively), so let the SDK build the request.
        return None
    # `Omit` removes a header, as in the SDK (the organization and project are `Omit` when unset).
    kept = {key: value for key, value in configured.items() if not isinstance(value, openai.Omit)}
    if "Authorization" not in kept:
        return None  # no key: the SDK raises its own error about it
    # Built as the SDK builds them: names lower-cased by openai 3.x (2.x keeps their case), then
    # the retry count and read timeout set over any default of the same name.
    headers = httpx.Headers(
        [
            (key.lower() if _SDK_LOWERCASES_HEADERS else key, str(value))
            for key, value in kept.items()
        ]
    )
    headers["x-stainless-retry-count"] = "0"
    timeout = official.timeout
    read = timeout.read if isinstance(timeout, httpx.Timeout) else timeout
    if read is not None:
        headers["x-stainless-read-timeout"] = str(read)
    pairs = [
        (name.decode(headers.encoding), value.decode(headers.encoding))
        for name, value in headers.raw
    ]
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
