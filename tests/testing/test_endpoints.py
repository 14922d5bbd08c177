"""The OpenAI-compatible endpoints, as the official clients see them."""

from __future__ import annotations

import array
import base64
import http.client
import json
import math
from collections.abc import Callable
from typing import Any, cast

import openai
import pytest

from resilient_llm.testing import MockOpenAIServer, chat_reply_text, embedding_vector

EMBED = "text-embedding-3-small"
CHAT = "gpt-4o-mini"
ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]
AsyncClientFactory = Callable[..., openai.AsyncOpenAI]


def _raw(
    server: MockOpenAIServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------------------ embeddings


def test_embeddings_default_encoding_is_base64_and_decodes_to_unit_vectors(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    texts = ["hello world", "a second, longer input text"]
    result = client.embeddings.create(input=texts, model=EMBED)

    assert result.object == "list"
    assert result.model == EMBED
    assert [d.index for d in result.data] == [0, 1]
    assert all(d.object == "embedding" for d in result.data)
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    for item in result.data:
        assert math.isclose(math.fsum(x * x for x in item.embedding), 1.0, rel_tol=1e-5)
    tokens = sum(max(1, len(t) // 4) for t in texts)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (tokens, tokens)
    assert mock_openai.stats.prompt_tokens == tokens
    # The official client asks for base64 unless told otherwise: the server must honour it.
    assert mock_openai.requests[0].n_inputs == 2


@pytest.mark.parametrize("dimensions", [1, 8, 256, 1536])
def test_float_and_base64_encodings_carry_the_same_vector(
    client: openai.OpenAI, dimensions: int
) -> None:
    as_float = client.embeddings.create(
        input="same text", model=EMBED, dimensions=dimensions, encoding_format="float"
    )
    as_b64 = client.embeddings.create(
        input="same text", model=EMBED, dimensions=dimensions, encoding_format="base64"
    )
    encoded = cast(object, as_b64.data[0].embedding)
    assert isinstance(encoded, str)  # an explicit base64 request is left undecoded
    decoded = array.array("f", base64.b64decode(encoded)).tolist()
    assert as_float.data[0].embedding == decoded == embedding_vector("same text", dimensions)
    assert len(decoded) == dimensions


def test_embeddings_are_deterministic_across_requests_and_servers(
    make_client: ClientFactory, client: openai.OpenAI, mock_openai_factory: ServerFactory
) -> None:
    first = client.embeddings.create(input=["x", "y", "x"], model=EMBED).data
    assert first[0].embedding == first[2].embedding != first[1].embedding
    other = mock_openai_factory(seed=123)
    with make_client(other) as c:
        again = c.embeddings.create(input="x", model=EMBED).data[0].embedding
    assert again == first[0].embedding


def test_dimensions_default_per_model_and_shortening_keeps_the_prefix(
    client: openai.OpenAI,
) -> None:
    large = client.embeddings.create(input="t", model="text-embedding-3-large").data[0]
    assert len(large.embedding) == 3072
    ada = client.embeddings.create(input="t", model="text-embedding-ada-002").data[0]
    assert len(ada.embedding) == 1536
    full = embedding_vector("t", 1536)
    short = client.embeddings.create(input="t", model=EMBED, dimensions=4).data[0].embedding
    norm = math.sqrt(sum(x * x for x in full[:4]))
    assert short == pytest.approx([x / norm for x in full[:4]], rel=1e-5)


def test_token_array_inputs_are_embedded(client: openai.OpenAI) -> None:
    one = client.embeddings.create(input=[1, 2, 3], model=EMBED, dimensions=8)
    many = client.embeddings.create(input=[[1, 2, 3], [4, 5]], model=EMBED, dimensions=8)
    assert len(one.data) == 1
    assert len(many.data) == 2
    assert one.data[0].embedding == many.data[0].embedding != many.data[1].embedding
    assert many.usage.prompt_tokens == 5


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": ["x"] * 2049}, None),  # OpenAI does not say which parameter
        ({"input": "word " * 40_000}, None),  # over 8192 tokens
        ({"input": "t", "dimensions": 0}, "dimensions"),
        ({"input": "t", "dimensions": 1537}, "dimensions"),
        ({"input": "t", "model": "text-embedding-ada-002", "dimensions": 8}, "dimensions"),
    ],
)
def test_invalid_embedding_requests_get_400(
    client: openai.OpenAI, kwargs: dict[str, object], param: str | None
) -> None:
    request: dict[str, Any] = {"model": EMBED, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(**request)
    assert info.value.status_code == 400
    assert info.value.type == "invalid_request_error"
    assert info.value.param == param


def test_request_too_large_in_total_tokens_gets_400(client: openai.OpenAI) -> None:
    texts = ["x" * 30_000] * 41  # 7,500 tokens each, 307,500 in all
    with pytest.raises(openai.BadRequestError, match="max 300000 tokens"):
        client.embeddings.create(input=texts, model=EMBED, dimensions=1)


@pytest.mark.parametrize("model", ["does-not-exist", "unknown-embedder"])
def test_unknown_model_gets_404_model_not_found(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(input="x", model=model)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model)


# ------------------------------------------------------------------------------ chat


def test_chat_completion_is_deterministic_and_complete(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "Summarise."},
        {"role": "user", "content": text},
    ]
    result = client.chat.completions.create(model=CHAT, messages=messages)  # type: ignore[arg-type]

    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert result.model == CHAT
    assert isinstance(result.created, int)
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == chat_reply_text(text)
    assert choice.message.content == "Summary: " + " ".join(text.split()[:12]) + "..."
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == len(choice.message.content.split())
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert mock_openai.stats.prompt_tokens == result.usage.prompt_tokens
    again = client.chat.completions.create(model=CHAT, messages=messages)  # type: ignore[arg-type]
    assert again.choices[0].message.content == choice.message.content


@pytest.mark.parametrize("limit_name", ["max_tokens", "max_completion_tokens"])
def test_chat_honours_the_token_limit(client: openai.OpenAI, limit_name: str) -> None:
    limit: dict[str, Any] = {limit_name: 3}
    result = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "alpha beta gamma delta epsilon"}],
        n=2,
        **limit,
    )
    assert [c.index for c in result.choices] == [0, 1]
    assert result.choices[1].message.content == "Summary: alpha beta"
    assert result.choices[0].finish_reason == "length"


def test_chat_accepts_content_parts(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
    )
    assert result.choices[0].message.content == "Summary: parts work"


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_streaming(client: openai.OpenAI, include_usage: bool) -> None:
    text = "stream these few words"
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    with stream:
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == chat_reply_text(text)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == len(content.split())
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.usage is None for c in chunks)


@pytest.mark.anyio
async def test_async_client_parses_everything(
    make_async_client: AsyncClientFactory, mock_openai: MockOpenAIServer
) -> None:
    async with make_async_client(mock_openai) as client:
        emb = await client.embeddings.create(input=["a", "b"], model=EMBED, dimensions=16)
        assert [len(d.embedding) for d in emb.data] == [16, 16]
        chat = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "async works"}]
        )
        assert chat.choices[0].message.content == "Summary: async works"
        models = [m.id async for m in client.models.list()]
        assert EMBED in models


# openai's AsyncStream stops iterating its SSE generator at [DONE] without closing it; trio
# reports such generators as a ResourceWarning, whatever the server sends.
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_streams(
    make_async_client: AsyncClientFactory, mock_openai: MockOpenAIServer
) -> None:
    async with make_async_client(mock_openai) as client:
        stream = await client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "streamed"}], stream=True
        )
        async with stream:
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == "Summary: streamed"


# ------------------------------------------------------------------------------ models, errors


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"} <= set(ids)
    model = client.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "system")
    assert client.models.retrieve("my-org/custom-model").id == "my-org/custom-model"


def test_unknown_path_wrong_method_and_bad_json(mock_openai: MockOpenAIServer) -> None:
    status, headers, body = _raw(mock_openai, "POST", "/v1/nope", b"{}")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == {
        "message": "Invalid URL (POST /v1/nope)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    status, _, body = _raw(mock_openai, "GET", "/v1/embeddings")
    assert status == 405
    status, _, body = _raw(mock_openai, "POST", "/v1/embeddings", b"{not json")
    assert status == 400
    assert "could not parse the JSON body" in json.loads(body)["error"]["message"]
    status, _, body = _raw(mock_openai, "POST", "/v1/chat/completions", b'{"model": "m"}')
    assert status == 400
    assert json.loads(body)["error"]["param"] == "messages"
    assert mock_openai.stats.responses_by_status == {404: 1, 405: 1, 400: 2}


def test_api_key_is_enforced_when_set(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(api_key="sk-right")
    with (
        make_client(server, api_key="sk-wrong") as wrong,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        wrong.embeddings.create(input="x", model=EMBED)
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(info.value)
    with make_client(server, api_key="sk-right") as right:
        assert right.embeddings.create(input="x", model=EMBED).data


def test_poison_marker_fails_the_request_with_400(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(input=["fine", "this one is POISON"], model=EMBED)
    assert info.value.param == "input"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "POISON pill"}]
        )
    assert client.embeddings.create(input=["fine"], model=EMBED).data
    assert mock_openai.stats.responses_by_status == {400: 2, 200: 1}
    assert mock_openai.stats.prompt_tokens == 1  # refused requests bill nothing


def test_poison_marker_can_be_changed_or_disabled(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    custom = mock_openai_factory(poison_marker="<<bad>>")
    off = mock_openai_factory(poison_marker=None)
    with make_client(custom) as c:
        assert c.embeddings.create(input="POISON", model=EMBED).data
        with pytest.raises(openai.BadRequestError):
            c.embeddings.create(input="x <<bad>> y", model=EMBED)
    with make_client(off) as c:
        assert c.embeddings.create(input="POISON", model=EMBED).data


def test_request_log_records_texts_only_when_asked(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    quiet = mock_openai_factory()
    verbose = mock_openai_factory(record_texts=True)
    for server in (quiet, verbose):
        with make_client(server) as c:
            c.embeddings.create(input=["first", "second"], model=EMBED, dimensions=4)
    assert quiet.requests[0].texts is None
    record = verbose.requests[0]
    assert record.texts == ("first", "second")
    assert (record.path, record.method, record.status, record.n_inputs) == (
        "/v1/embeddings",
        "POST",
        200,
        2,
    )
    assert record.model == EMBED
    assert record.fault is None
    assert record.body_bytes > 0
    assert record.duration >= 0
