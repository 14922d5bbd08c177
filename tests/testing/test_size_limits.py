"""Requests refused for their size, in the words of the real servers (SPEC §6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer

EMBED = "text-embedding-3-small"
ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]


def _refused(
    make_client: ClientFactory, server: MockOpenAIServer, **request: Any
) -> openai.APIStatusError:
    with make_client(server) as client, pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(model=EMBED, **request)
    return info.value


def test_tei_refuses_too_many_inputs_with_413_validation(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_inputs_per_request=32, size_limit_style="tei")
    error = _refused(make_client, server, input=["x"] * 200)
    assert error.status_code == 413
    # text-embeddings-inference's OpenAI route: the fields at the top level, no "error" key.
    assert error.response.json() == {
        "message": "batch size 200 > maximum allowed batch size 32",
        "code": 413,
        "type": "Validation",
    }
    assert "batch size 200 > maximum allowed batch size 32" in str(error)
    with make_client(server) as client:
        assert len(client.embeddings.create(model=EMBED, input=["x"] * 32).data) == 32
    refused, accepted = server.requests
    assert (refused.status, refused.size_limit, refused.n_inputs) == (413, "inputs", 200)
    assert (accepted.status, accepted.size_limit) == (200, None)
    assert server.stats.size_refusals == 1


def test_tei_refuses_a_large_body_as_axum_does(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_request_bytes=2000, size_limit_style="tei")
    error = _refused(make_client, server, input=["word " * 50] * 10)
    assert error.status_code == 413
    assert error.response.headers["content-type"] == "text/plain; charset=utf-8"
    assert error.response.text == "Failed to buffer the request body: length limit exceeded"
    record = server.requests[0]
    assert record.size_limit == "bytes"
    assert record.body_bytes > 2000
    assert record.n_inputs == 10  # the log still says what was refused


def test_tei_refuses_a_long_input(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_input_tokens=512, size_limit_style="tei")
    error = _refused(make_client, server, input=["short", "x" * 2100])  # 525 tokens
    assert error.status_code == 413
    assert error.response.json() == {
        "message": "Input validation error: `inputs` must have less than 512 tokens. Given: 525",
        "code": 413,
        "type": "Validation",
    }
    assert server.requests[0].size_limit == "input_tokens"


def test_vllm_refuses_a_long_input_with_its_context_message(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_input_tokens=8192, size_limit_style="vllm")
    error = _refused(make_client, server, input=["y" * 41152])  # 10288 tokens
    assert isinstance(error, openai.BadRequestError)
    assert error.body == {
        "message": "This model's maximum context length is 8192 tokens. However, you requested "
        "10288 tokens in the input for embedding generation. Please reduce the length of the "
        "input.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert error.type == "BadRequestError"
    assert str(error.code) == "400"  # openai 3 turns the code into a string
    assert server.requests[0].size_limit == "input_tokens"


def test_litellm_refuses_a_large_body_in_megabytes(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_request_bytes=1024, size_limit_style="litellm")
    text = "z" * 2000
    error = _refused(make_client, server, input=[text])
    size = server.requests[0].body_bytes
    assert isinstance(error, openai.BadRequestError)
    assert error.body == {
        "message": f"Request size is too large. Request size is {size / 1048576} MB. "
        f"Max size is {1024 / 1048576} MB",
        "type": "bad_request_error",
        "param": "content-length",
        "code": 400,
    }
    assert server.requests[0].size_limit == "bytes"


def test_azure_refuses_too_many_inputs(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_inputs_per_request=16, size_limit_style="azure")
    error = _refused(make_client, server, input=["x"] * 17)
    assert isinstance(error, openai.BadRequestError)
    assert isinstance(error.body, dict)
    assert error.body["message"].startswith(
        "Too many inputs. The max number of inputs is 16.  We hope to increase the number of "
        "inputs per request soon."
    )
    assert "Too many inputs. The max number of inputs is 16." in str(error)
    assert error.type == "invalid_request_error"


def test_openai_style_says_nothing_about_size(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    # OpenAI answers too many inputs with a generic 400: only splitting can tell it from a bad
    # input (embeddings-benchmark/mteb#1200).
    server = mock_openai_factory(max_inputs_per_request=4)
    error = _refused(make_client, server, input=["x"] * 5)
    assert isinstance(error, openai.BadRequestError)
    assert error.body == {
        "message": "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    builtin = _refused(make_client, server, input=["x"] * 2049)  # OpenAI's own 2048 cap
    assert builtin.body == error.body
    assert [r.size_limit for r in server.requests] == ["inputs", "inputs"]


def test_openai_style_body_limit_is_a_413_error_object(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_request_bytes=100)
    with make_client(server) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "q" * 200}]
        )
    assert info.value.status_code == 413
    assert info.value.type == "invalid_request_error"
    assert "at most 100" in info.value.message
    record = server.requests[0]
    assert (record.path, record.size_limit, record.n_inputs) == (
        "/v1/chat/completions",
        "bytes",
        1,
    )


def test_builtin_openai_token_limits_are_size_refusals_too(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    with pytest.raises(openai.BadRequestError, match="max 300000 tokens per request"):
        client.embeddings.create(input=["x" * 30_000] * 41, model=EMBED, dimensions=1)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens"):
        client.embeddings.create(input="x" * 40_000, model=EMBED)
    assert [r.size_limit for r in mock_openai.requests] == ["request_tokens", "input_tokens"]
    assert mock_openai.stats.size_refusals == 2


def test_size_is_refused_before_poison_and_spends_no_rate_budget(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_inputs_per_request=2, size_limit_style="tei", rpm=1)
    error = _refused(make_client, server, input=["POISON", "b", "c"])
    assert error.status_code == 413
    with make_client(server) as client:
        assert client.embeddings.create(model=EMBED, input=["a", "b"]).data
    assert [r.status for r in server.requests] == [413, 200]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_inputs_per_request": 8, "size_limit_style": "vllm"}, "no counterpart in a 'vllm'"),
        ({"max_request_bytes": 8, "size_limit_style": "vllm"}, "use max_input_tokens"),
        ({"max_input_tokens": 8, "size_limit_style": "litellm"}, "use max_request_bytes"),
        ({"max_request_bytes": 8, "size_limit_style": "azure"}, "no counterpart in a 'azure'"),
        ({"size_limit_style": "nginx"}, "size_limit_style must be one of"),
        ({"max_inputs_per_request": 0}, "max_inputs_per_request must be an int >= 1"),
        ({"max_request_bytes": True}, "max_request_bytes must be an int >= 1"),
    ],
)
def test_size_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MockOpenAIServer(**options)


def test_size_refusal_bodies_are_what_the_client_shows(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(max_inputs_per_request=1, size_limit_style="tei")
    with make_client(server) as client:
        raw = client.embeddings.with_raw_response
        with pytest.raises(openai.APIStatusError) as info:
            raw.create(model=EMBED, input=["a", "b"])
    assert json.loads(info.value.response.text)["type"] == "Validation"
    # openai takes the whole body as the error when it has no "error" key.
    assert info.value.body == {
        "message": "batch size 2 > maximum allowed batch size 1",
        "code": 413,
        "type": "Validation",
    }


def test_the_byte_limit_is_inclusive(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    probe = mock_openai_factory()
    with make_client(probe) as client:
        client.embeddings.create(model=EMBED, input=["same body"])
    size = probe.requests[0].body_bytes
    exact = mock_openai_factory(max_request_bytes=size, size_limit_style="tei")
    short = mock_openai_factory(max_request_bytes=size - 1, size_limit_style="tei")
    with make_client(exact) as client:
        assert client.embeddings.create(model=EMBED, input=["same body"]).data
    assert _refused(make_client, short, input=["same body"]).status_code == 413
    assert exact.requests[0].body_bytes == short.requests[0].body_bytes == size
