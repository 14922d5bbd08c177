"""The public surface: names, parity of the two facades, bad input, secrets (SPEC §2, §5)."""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import openai
import pytest

import resilient_llm
from resilient_llm import (
    AsyncResilientClient,
    InvalidInput,
    ResilientClient,
    RetryPolicy,
    Timeouts,
)
from resilient_llm.testing import Fault, MockOpenAIServer

from .conftest import TEST_KEY
from .test_retries import make_async, make_sync


def test_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(resilient_llm).items()
        if name.isidentifier() and not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(resilient_llm.__all__) == resilient_llm.__all__
    assert set(resilient_llm.__all__) - {"__version__"} == public


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and callable(member)
    }


def test_sync_and_async_facades_have_the_same_methods_and_signatures() -> None:
    sync = _public_methods(ResilientClient)
    asynchronous = _public_methods(AsyncResilientClient)
    sync.pop("close")
    asynchronous.pop("aclose")
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        other = asynchronous[name]
        assert list(signature.parameters) == list(other.parameters), name
        for param, value in signature.parameters.items():
            assert value.kind == other.parameters[param].kind, (name, param)
            assert value.default == other.parameters[param].default, (name, param)
        method = getattr(AsyncResilientClient, name)
        # Streams are entered with ``async with``, everything else is awaited.
        assert inspect.iscoroutinefunction(method) is not name.startswith("iter_"), name
        if name.startswith("iter_"):
            returned = inspect.signature(method).return_annotation
            assert "AsyncBatchStream" in str(returned), name


def test_constructor_takes_the_spec_arguments() -> None:
    params = inspect.signature(ResilientClient).parameters
    for name in (
        "api_key",
        "base_url",
        "organization",
        "project",
        "default_headers",
        "chat_model",
        "embedding_model",
        "timeouts",
        "deadline",
        "retry",
        "max_concurrency",
        "openai_factory",
    ):
        assert name in params, name


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"timeouts": -1}, ValueError, "timeouts"),
        ({"timeouts": 0}, ValueError, "timeouts"),
        ({"timeouts": "5"}, TypeError, "timeouts"),
        ({"deadline": 0}, ValueError, "deadline"),
        ({"deadline": math.nan}, ValueError, "deadline"),
        ({"deadline": math.inf}, ValueError, "deadline"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency"),
        ({"max_concurrency": 2.5}, TypeError, "max_concurrency"),
        ({"retry": {"max_attempts": 3}}, TypeError, "retry"),
        ({"chat_model": ""}, TypeError, "chat_model"),
        ({"openai_factory": "azure"}, TypeError, "openai_factory"),
        ({"on_retry": 3}, TypeError, "on_retry"),
        ({"api_key": 123}, TypeError, "api_key"),
    ],
)
def test_bad_client_settings_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        ResilientClient(api_key=TEST_KEY, **kwargs)
    with pytest.raises(error, match=names):
        AsyncResilientClient(api_key=TEST_KEY, **kwargs)


@pytest.mark.parametrize(
    ("build", "error", "names"),
    [
        (lambda: Timeouts(connect=0), ValueError, "timeouts.connect"),
        (lambda: Timeouts(read=-2), ValueError, "timeouts.read"),
        (lambda: RetryPolicy(max_attempts=0), ValueError, "max_attempts"),
        (lambda: RetryPolicy(max_attempts=2.0), TypeError, "max_attempts"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(base_delay=-1), ValueError, "base_delay"),
        (lambda: RetryPolicy(base_delay=5, max_delay=1), ValueError, "max_delay"),
    ],
)
def test_bad_policies_name_the_argument(build: Any, error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):
        build()


def test_missing_api_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(openai.OpenAIError, match="OPENAI_API_KEY"):
        ResilientClient()


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda c: c.chat("hi"), TypeError, "messages"),
        (lambda c: c.chat([]), ValueError, "messages"),
        (lambda c: c.chat(["hi"]), TypeError, r"messages\[0\]"),
        (lambda c: c.chat([{"content": "no role"}]), TypeError, "role"),
        (lambda c: c.complete(42), TypeError, "prompt"),
        (lambda c: c.complete("   "), InvalidInput, "prompt"),
        (lambda c: c.embed(None), TypeError, "texts"),
        (lambda c: c.embed(b"bytes"), TypeError, "decode"),
        (lambda c: c.embed(""), InvalidInput, "empty"),
        (lambda c: c.embed(["ok", 3]), TypeError, r"texts\[1\]"),
        (lambda c: c.embed([]), ValueError, "texts"),
        (lambda c: c.embed("x", encoding_format="int8"), ValueError, "encoding_format"),
        (lambda c: c.summarize("text", max_words=0), ValueError, "max_words"),
        (lambda c: c.embed("x", deadline=-1), ValueError, "deadline"),
    ],
)
def test_bad_call_arguments_fail_before_anything_is_sent(
    server: MockOpenAIServer, call: Any, error: type[Exception], names: str
) -> None:
    with make_sync(server) as client, pytest.raises(error, match=names):
        call(client)
    assert server.stats.total_requests == 0


@pytest.mark.anyio
async def test_async_bad_arguments_fail_before_anything_is_sent(server: MockOpenAIServer) -> None:
    async with make_async(server) as client:
        with pytest.raises(TypeError, match="messages"):
            await client.chat("hi")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            await client.embed(["fine", ""])
    assert server.stats.total_requests == 0


def test_every_endpoint_works_sync(server: MockOpenAIServer) -> None:
    with make_sync(server) as client:
        completion = client.chat([{"role": "user", "content": "hello there"}], temperature=0)
        assert isinstance(completion, openai.types.chat.ChatCompletion)
        assert client.complete("hello", system="be brief")
        assert client.summarize("a long text " * 20, max_words=10)
        one = client.embed("hello", dimensions=16)
        many = client.embed(["hello", "world"], dimensions=16)
        assert len(one) == 16
        assert len(many) == 2
        assert many[0] == pytest.approx(one, abs=1e-6)
        assert client.embed(["hello"], dimensions=16, encoding_format="float")[0] == pytest.approx(
            one, abs=1e-6
        )
    assert server.requests[-1].model == "text-embedding-3-small"


@pytest.mark.anyio
async def test_every_endpoint_works_async(server: MockOpenAIServer) -> None:
    async with make_async(server, chat_model="gpt-4.1-mini") as client:
        completion = await client.chat([{"role": "user", "content": "hello"}])
        assert completion.model
        assert await client.complete("hello")
        assert await client.summarize("text to summarise", instructions="One line.")
        assert len(await client.embed("hello", dimensions=8)) == 8
        assert len(await client.embed(("a", "b", "c"))) == 3
    assert server.requests[0].model == "gpt-4.1-mini"


def test_embed_matches_the_official_client_exactly(server: MockOpenAIServer) -> None:
    texts = ["alpha", "beta", "gamma"]
    with make_sync(server) as client:
        ours = client.embed(texts, dimensions=32)
        official = client.openai.embeddings.create(
            input=texts, model="text-embedding-3-small", dimensions=32
        )
    assert ours == [item.embedding for item in official.data]


def test_api_key_never_appears_in_repr_logs_or_errors(
    server: MockOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Fault.status(500), Fault.status(401))
    with make_sync(server) as client:
        assert TEST_KEY not in repr(client)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.embed("hello")
    texts = [caplog.text, str(caught.value), repr(caught.value), *caught.value.__notes__]
    assert all(TEST_KEY not in text for text in texts)
    assert "SECRET" not in repr(client)
