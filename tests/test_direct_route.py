"""The direct embeddings route against the SDK path: the same request, the same errors (SPEC §1).

Clients the library builds itself send embeddings requests on the official client's own HTTP
client without the SDK's request machinery (``resilient_llm._direct.JsonRoute``); a client from
``openai_factory`` goes through the SDK. Both paths must put the same request on the wire and
fail the same way, so every fault here runs through both and the errors are compared.
"""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import openai
import pytest

from resilient_llm import AsyncResilientClient, ResilientClient, RetryPolicy, Timeouts
from resilient_llm.testing import Fault, MockOpenAIServer

from .conftest import TEST_KEY

ONCE = RetryPolicy(max_attempts=1)
TIMEOUTS = Timeouts(connect=2.0, read=0.5, write=3.0, pool=4.0)
TEXTS = ["alpha", "beta gamma"]
IDENTITY: dict[str, Any] = {
    "organization": "org-parity",
    "project": "proj-parity",
    "default_headers": {"X-Custom": "on every request"},
}


def _native_timeout() -> Any:
    return openai.Timeout(
        connect=TIMEOUTS.connect, read=TIMEOUTS.read, write=TIMEOUTS.write, pool=TIMEOUTS.pool
    )


def _pair(cls: Any, official_cls: Any, base_url: str) -> tuple[Any, Any]:
    """The library's own client (direct route) and one built by ``openai_factory`` (SDK path),
    configured alike."""
    settings: dict[str, Any] = {"retry": ONCE, "deadline": None, "timeouts": TIMEOUTS}
    own = cls(api_key=TEST_KEY, base_url=base_url, **IDENTITY, **settings)

    def factory(http_client: Any) -> Any:
        return official_cls(
            api_key=TEST_KEY,
            base_url=base_url,
            http_client=http_client,
            max_retries=0,
            timeout=_native_timeout(),
            **IDENTITY,
        )

    return own, cls(openai_factory=factory, **settings)


def sync_pair(base_url: str) -> tuple[ResilientClient, ResilientClient]:
    return _pair(ResilientClient, openai.OpenAI, base_url)


def async_pair(base_url: str) -> tuple[AsyncResilientClient, AsyncResilientClient]:
    return _pair(AsyncResilientClient, openai.AsyncOpenAI, base_url)


def _failure(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("the call succeeded")


async def _afailure(call: Callable[[], Any]) -> BaseException:
    try:
        await call()
    except Exception as error:
        return error
    raise AssertionError("the call succeeded")


def describe(error: BaseException) -> dict[str, Any]:
    """What a caller can see of an error, time-dependent notes left out."""
    response = getattr(error, "response", None)
    return {
        "type": type(error),
        "message": str(error),
        "status": getattr(error, "status_code", None),
        "body": getattr(error, "body", None),
        "code": getattr(error, "code", None),
        "error_type": getattr(error, "type", None),
        "param": getattr(error, "param", None),
        "response_body": None if response is None else response.content,
        "retry_after": None if response is None else response.headers.get("retry-after"),
        "cause": type(error.__cause__),
        "context": type(error.__context__),
        "suppress_context": error.__suppress_context__,
        "retryable": getattr(error, "retryable", None),
    }


def describe_request(request: Any) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": str(request.url),
        "headers": list(request.headers.multi_items()),
        # As on the wire: the names' case and order.
        "raw_headers": list(request.headers.raw),
        "content": request.content,
        "timeout": request.extensions.get("timeout"),
    }


FAULTS = [
    pytest.param(Fault.status(400, message="bad input", error_code="invalid_value"), id="400"),
    pytest.param(Fault.status(401), id="401"),
    pytest.param(Fault.status(403), id="403"),
    pytest.param(Fault.status(404, error_code="model_not_found"), id="404"),
    pytest.param(Fault.status(409), id="409"),
    pytest.param(Fault.status(422), id="422"),
    pytest.param(Fault.status(429, retry_after=0.1), id="429-retry-after"),
    pytest.param(Fault.insufficient_quota(), id="429-quota"),
    pytest.param(Fault.status(500), id="500"),
    pytest.param(Fault.status(503, should_retry=False), id="503-no-retry"),
    pytest.param(Fault.html(502), id="502-html"),
    pytest.param(Fault.malformed_json(), id="200-malformed-json"),
    pytest.param(Fault.html(200), id="200-html"),
    pytest.param(Fault.error_in_body(), id="200-error-body"),
    pytest.param(Fault.embeddings("missing"), id="200-missing-vector"),
    pytest.param(Fault.embeddings("nan"), id="200-nan"),
    pytest.param(Fault.reset(), id="reset"),
    pytest.param(Fault.reset(after_bytes=20), id="reset-mid-response"),
    pytest.param(Fault.hang(), id="read-timeout"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_sync_paths_fail_alike(fault: Fault) -> None:
    with MockOpenAIServer() as server:
        own, sdk = sync_pair(server.base_url)
        with own, sdk:
            errors = []
            for client in (own, sdk):
                server.script(fault, path="/v1/embeddings")
                errors.append(_failure(lambda client=client: client.embed(TEXTS)))
    direct, reference = errors
    assert describe(direct) == describe(reference)
    # Both reached the server with the same body (a hung request is recorded once it ends).
    first, second = ((r.path, r.body_bytes, r.fault) for r in server.requests)
    assert first == second


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
async def test_async_paths_fail_alike(fault: Fault) -> None:
    with MockOpenAIServer() as server:
        own, sdk = async_pair(server.base_url)
        errors = []
        async with own, sdk:
            for client in (own, sdk):
                server.script(fault, path="/v1/embeddings")
                errors.append(await _afailure(lambda client=client: client.embed(TEXTS)))
    direct, reference = errors
    assert describe(direct) == describe(reference)
    first, second = ((r.path, r.body_bytes, r.fault) for r in server.requests)
    assert first == second


def test_paths_send_the_same_request() -> None:
    with MockOpenAIServer(api_key=TEST_KEY) as server:
        own, sdk = sync_pair(server.base_url)
        with own, sdk:
            # The server checks the key; both paths send it.
            assert own.embed(TEXTS) == sdk.embed(TEXTS)
            sent = []
            for client in (own, sdk):
                server.script(Fault.status(400), path="/v1/embeddings")
                error = _failure(lambda client=client: client.embed(TEXTS, dimensions=8))
                assert isinstance(error, openai.BadRequestError)
                sent.append(describe_request(error.request))
    direct, reference = sent
    assert direct == reference
    headers = dict(direct["headers"])
    assert headers["openai-organization"] == "org-parity"
    assert headers["openai-project"] == "proj-parity"
    assert headers["x-custom"] == "on every request"
    assert headers["x-stainless-read-timeout"] == str(TIMEOUTS.read)
    assert direct["content"] == (
        b'{"dimensions":8,"model":"text-embedding-3-small","input":["alpha","beta gamma"],'
        b'"encoding_format":"base64"}'
    )


@pytest.mark.anyio
async def test_async_paths_send_the_same_request() -> None:
    with MockOpenAIServer() as server:
        own, sdk = async_pair(server.base_url)
        sent = []
        async with own, sdk:
            for client in (own, sdk):
                server.script(Fault.status(400), path="/v1/embeddings")
                error = await _afailure(lambda client=client: client.embed(TEXTS))
                assert isinstance(error, openai.BadRequestError)
                sent.append(describe_request(error.request))
        assert sent[0] == sent[1]
        assert dict(sent[0]["headers"])["x-stainless-async"].startswith("async:")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_alike() -> None:
    own, sdk = sync_pair(f"http://127.0.0.1:{_closed_port()}/v1")
    with own, sdk:
        direct, reference = (_failure(lambda c=c: c.embed(TEXTS)) for c in (own, sdk))
    assert isinstance(direct, openai.APIConnectionError)
    assert describe(direct) == describe(reference)
    assert str(direct.request.url) == str(reference.request.url)


@pytest.mark.anyio
async def test_async_connection_refused_alike() -> None:
    own, sdk = async_pair(f"http://127.0.0.1:{_closed_port()}/v1")
    async with own, sdk:
        direct = await _afailure(lambda: own.embed(TEXTS))
        reference = await _afailure(lambda: sdk.embed(TEXTS))
    assert isinstance(direct, openai.APIConnectionError)
    assert describe(direct) == describe(reference)


def test_own_clients_skip_the_sdk_and_factory_clients_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posts: list[str] = []
    original = openai.OpenAI.post

    def counting_post(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        posts.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(openai.OpenAI, "post", counting_post)
    with MockOpenAIServer() as server:
        own, sdk = sync_pair(server.base_url)
        with own, sdk:
            assert own.embed(TEXTS) == sdk.embed(TEXTS)
            # An option only the SDK knows how to send takes the SDK path on any client.
            own.embed(TEXTS, extra_headers={"X-Once": "1"})
    assert posts == ["/embeddings", "/embeddings"]
    assert len(server.requests) == 3


def test_a_key_set_on_the_official_client_is_used() -> None:
    rotated = "sk-rotated-0123456789"
    with (
        MockOpenAIServer(api_key=rotated) as server,
        ResilientClient(api_key=TEST_KEY, base_url=server.base_url, retry=ONCE) as client,
    ):
        assert isinstance(_failure(lambda: client.embed("before")), openai.AuthenticationError)
        client.openai.api_key = rotated
        assert len(client.embed("after")) > 0


def test_cookies_the_server_sets_are_sent_alike() -> None:
    # OpenAI answers with cookies (Cloudflare's); the SDK path sends them back, so must ours.
    cookie = Fault.status(500, headers={"set-cookie": "session=abc123; Path=/"})
    with MockOpenAIServer() as server:
        own, sdk = sync_pair(server.base_url)
        with own, sdk:
            sent = []
            for client in (own, sdk):
                server.script(cookie, Fault.status(400), path="/v1/embeddings")
                _failure(lambda client=client: client.embed(TEXTS))
                error = _failure(lambda client=client: client.embed(TEXTS))
                assert isinstance(error, openai.BadRequestError)
                sent.append(describe_request(error.request))
    assert sent[0] == sent[1]
    assert dict(sent[0]["headers"])["cookie"] == "session=abc123"


ODD_HEADERS = [
    # A proxy's own token in lower case: one authorization header, the proxy's, as the SDK sends.
    pytest.param({"authorization": "Bearer proxy-token"}, id="lowercase-authorization"),
    pytest.param({"user-agent": "myapp/1", "openai-organization": "org-2"}, id="lowercase-names"),
    pytest.param({"User-Agent": openai.Omit()}, id="omit-user-agent"),
    pytest.param({"x-stainless-os": openai.Omit()}, id="omit-lowercase"),
    pytest.param({"x-stainless-retry-count": "7"}, id="own-retry-count"),
]


@pytest.mark.parametrize("headers", ODD_HEADERS)
def test_default_headers_are_merged_as_the_sdk_merges_them(headers: dict[str, Any]) -> None:
    with MockOpenAIServer() as server:
        settings: dict[str, Any] = {"retry": ONCE, "timeouts": TIMEOUTS}
        own = ResilientClient(
            api_key=TEST_KEY, base_url=server.base_url, default_headers=headers, **settings
        )

        def factory(http_client: Any) -> Any:
            return openai.OpenAI(
                api_key=TEST_KEY,
                base_url=server.base_url,
                http_client=http_client,
                max_retries=0,
                timeout=_native_timeout(),
                default_headers=headers,
            )

        sdk = ResilientClient(openai_factory=factory, **settings)
        sent = []
        with own, sdk:
            for client in (own, sdk):
                server.script(Fault.status(400), path="/v1/embeddings")
                error = _failure(lambda client=client: client.embed(TEXTS))
                assert isinstance(error, openai.BadRequestError)
                sent.append(describe_request(error.request))
    assert sent[0] == sent[1]
    first, second = ((r.path, r.body_bytes, r.texts) for r in server.requests)
    assert first == second


def _outcome(call: Callable[[], Any]) -> tuple[type[BaseException], str] | None:
    try:
        call()
    except Exception as error:
        return type(error), str(error)
    return None


def test_an_omitted_authorization_fails_as_the_sdk_fails() -> None:
    # openai 3.x refuses to send without a key (TypeError); early 2.x sends without one. Either
    # way embeddings (the direct road's endpoint) must do what chat (the SDK's road) does.
    with MockOpenAIServer() as server:
        own = ResilientClient(
            api_key=TEST_KEY,
            base_url=server.base_url,
            default_headers={"Authorization": openai.Omit()},
            retry=ONCE,
        )
        with own:
            embedded = _outcome(lambda: own.embed(TEXTS))
            chatted = _outcome(lambda: own.chat([{"role": "user", "content": "hi"}]))
    assert embedded == chatted
    if embedded is not None:
        assert not server.requests, "a request went out without the key"


def test_official_clients_of_finished_threads_are_collected() -> None:
    with (
        MockOpenAIServer() as server,
        ResilientClient(api_key=TEST_KEY, base_url=server.base_url, retry=ONCE) as client,
    ):
        officials: list[weakref.ref[Any]] = []

        def work() -> None:
            client.embed("x")
            officials.append(weakref.ref(client.openai))

        for _ in range(10):
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
        gc.collect()
        alive = [ref for ref in officials if ref() is not None]
    assert len(officials) == 10
    assert not alive, f"{len(alive)} of 10 official clients outlived their threads"


def test_a_plain_client_takes_the_direct_route(monkeypatch: pytest.MonkeyPatch) -> None:
    # No organization or project: the SDK keeps their headers as `Omit`, which must not send
    # the library's own clients down the SDK's slower road.
    posts: list[str] = []
    original = openai.OpenAI.post

    def counting_post(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        posts.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(openai.OpenAI, "post", counting_post)
    with (
        MockOpenAIServer() as server,
        ResilientClient(api_key=TEST_KEY, base_url=server.base_url, retry=ONCE) as client,
    ):
        assert len(client.embed(TEXTS)) == len(TEXTS)
        client.embed_batch(TEXTS, batch_size=1)
    assert posts == []
    assert len(server.requests) == 3
