"""What the library's errors and log lines say to a person, end to end (issue 19, the
library's rows; the wording helpers themselves are tested in test_messages.py)."""

from __future__ import annotations

import logging
import re
import socket

import openai
import pytest

from resilient_llm import DeadlineExceeded, ResilientClient, RetryPolicy
from resilient_llm.testing import Fault, MockOpenAIServer

from .conftest import TEST_KEY


def test_the_message_itself_says_why_a_retry_after_ended_the_call(
    server: MockOpenAIServer,
) -> None:
    server.script(Fault.status(429, retry_after=30))
    client = ResilientClient(api_key=TEST_KEY, base_url=server.base_url, deadline=5)
    with client, pytest.raises(DeadlineExceeded) as caught:
        client.embed("hello")
    message = str(caught.value)
    assert "deadline of 5 s exceeded after 1 attempt" in message
    assert re.search(
        r"the server asked to wait 30 s and only (5|4\.\d+) s of the deadline were", message
    )
    assert isinstance(caught.value.__cause__, openai.RateLimitError)


def test_a_deadline_is_written_as_people_write_it(server: MockOpenAIServer) -> None:
    server.script(Fault.hang())
    client = ResilientClient(api_key=TEST_KEY, base_url=server.base_url, deadline=1.5)
    with client, pytest.raises(DeadlineExceeded) as caught:
        client.embed("hello")
    assert "deadline of 1.5 s" in str(caught.value)
    assert "1.49" not in str(caught.value)


def test_retries_of_a_lambda_name_the_endpoint_it_reached(
    server: MockOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resilient_llm")
    server.script(Fault.status(503), path="/v1/models")
    policy = RetryPolicy(base_delay=0.01, max_delay=0.01)
    with ResilientClient(api_key=TEST_KEY, base_url=server.base_url, retry=policy) as client:
        models = client.call(lambda official: official.models.list())

        def list_models(official: openai.OpenAI) -> object:
            return official.models.list()

        server.script(Fault.status(503), path="/v1/models")
        client.call(list_models)
    assert models.data
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("/v1/models: attempt 1 of 5 failed")
    assert "<lambda>" not in lines[0]
    assert "list_models: attempt 1 of 5 failed" in lines[1]


def test_a_local_server_needs_no_key(
    server: MockOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ResilientClient(base_url=server.base_url) as client:
        assert client.embed("hello")
    assert server.requests[0].path == "/v1/embeddings"
    # OpenAI's own URL still needs one, as openai.OpenAI says.
    with pytest.raises(openai.OpenAIError, match="api_key"):
        ResilientClient()


@pytest.mark.parametrize("after_bytes", [0, 20], ids=["before-the-answer", "mid-answer"])
def test_a_connection_error_says_what_broke_and_where(
    server: MockOpenAIServer, after_bytes: int
) -> None:
    """openai says only "Connection error."; the note names the URL and what the HTTP package
    saw (a reset reaches asyncio and httpx as a bare ``ReadError`` with no message)."""
    for _ in range(2):
        server.script(Fault.reset(after_bytes=after_bytes))
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    client = ResilientClient(api_key=TEST_KEY, base_url=server.base_url, retry=policy)
    with client, pytest.raises(openai.APIConnectionError) as caught:
        client.embed("hello")
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"the request went to {server.base_url}/embeddings; cause: " in notes
    cause = notes.split("; cause: ", 1)[1].splitlines()[0]
    assert re.search(r"reset|closed|disconnect|protocol", cause, re.IGNORECASE), cause
    assert server.stats.requests_by_path.get("/v1/embeddings") == 2


def test_a_refused_connection_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(max_attempts=1)
    url = f"http://127.0.0.1:{port}/v1"
    client = ResilientClient(api_key=TEST_KEY, base_url=url, retry=policy)
    with client, pytest.raises(openai.APIConnectionError) as caught:
        client.embed("hello")
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"the request went to {url}/embeddings; cause: ConnectError: " in notes
    assert re.search(r"refused", notes, re.IGNORECASE), notes


def test_a_batch_that_finds_nothing_listening_says_why() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01)
    with ResilientClient(api_key=TEST_KEY, base_url=url, retry=policy) as client:
        result = client.embed_batch([f"text {i}" for i in range(40)], batch_size=1)
    assert result.stats.succeeded == 0
    assert len(result.failures) == 40
    assert result.stopped_by is not None
    assert result.stopped_by.error_type == "ServerUnreachable"
    # The same words as a single call's note: what the HTTP package saw, then the OS's reason.
    assert url in result.stopped_by.message
    assert re.search(
        r"\((ConnectError|ConnectionRefusedError): .*refused",
        result.stopped_by.message,
        re.IGNORECASE,
    ), result.stopped_by.message
