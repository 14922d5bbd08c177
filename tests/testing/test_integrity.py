"""Answers that break integrity (SPEC §6), as the raw official client (no retries) receives them."""

from __future__ import annotations

import array
import base64
import json
import math
from collections.abc import Callable
from typing import Any, cast

import openai
import pytest

from resilient_llm.testing import Fault, MockOpenAIServer, chat_reply_text, embedding_vector

EMBED = "text-embedding-3-small"
CHAT = "gpt-4o-mini"
TEXTS = ["alpha", "beta", "gamma"]
DIMS = 8
MIDDLE = DIMS // 2  # where the nan / infinity defects put their value
ServerFactory = Callable[..., MockOpenAIServer]
ClientFactory = Callable[..., openai.OpenAI]


def _expected(text: str) -> list[float]:
    return embedding_vector(text, DIMS)


def _embed(client: openai.OpenAI, encoding: str, texts: list[str] = TEXTS) -> Any:
    # "default": the client asks for base64 itself and decodes it into floats.
    extra: dict[str, Any] = {} if encoding == "default" else {"encoding_format": encoding}
    return client.embeddings.create(input=texts, model=EMBED, dimensions=DIMS, **extra)


def _pairs(result: Any) -> list[tuple[int, list[float]]]:
    return [(d.index, list(d.embedding)) for d in result.data]


def _check_missing(pairs: list[tuple[int, list[float]]]) -> None:
    assert pairs == [(0, _expected("alpha")), (1, _expected("beta"))]


def _check_index_negative(pairs: list[tuple[int, list[float]]]) -> None:
    assert [i for i, _ in pairs] == [0, 1, 2, -1]
    assert pairs[3][1] == _expected("gamma")


def _check_index_too_large(pairs: list[tuple[int, list[float]]]) -> None:
    assert [i for i, _ in pairs] == [0, 1, 2, 3]
    assert pairs[3][1] == _expected("gamma")


def _check_duplicate_index(pairs: list[tuple[int, list[float]]]) -> None:
    assert [i for i, _ in pairs] == [0, 1, 1]  # index 2 is missing
    assert [v for _, v in pairs] == [_expected(t) for t in TEXTS]


def _check_empty_vector(pairs: list[tuple[int, list[float]]]) -> None:
    assert pairs[:2] == [(0, _expected("alpha")), (1, _expected("beta"))]
    assert pairs[2] == (2, [])


def _check_short_vector(pairs: list[tuple[int, list[float]]]) -> None:
    assert [len(v) for _, v in pairs] == [DIMS, DIMS, DIMS - 1]
    assert pairs[2][1] == _expected("gamma")[:-1]


def _check_nan(pairs: list[tuple[int, list[float]]]) -> None:
    vector = pairs[2][1]
    assert math.isnan(vector[MIDDLE])
    assert vector[:MIDDLE] + vector[MIDDLE + 1 :] == (
        _expected("gamma")[:MIDDLE] + _expected("gamma")[MIDDLE + 1 :]
    )
    assert all(math.isfinite(x) for _, v in pairs[:2] for x in v)


def _check_infinity(pairs: list[tuple[int, list[float]]]) -> None:
    assert pairs[2][1][MIDDLE] == math.inf
    assert sum(math.isinf(x) for _, v in pairs for x in v) == 1


def _check_reversed(pairs: list[tuple[int, list[float]]]) -> None:
    assert [i for i, _ in pairs] == [2, 1, 0]
    assert all(vector == _expected(TEXTS[index]) for index, vector in pairs)


CHECKS: dict[str, Callable[[list[tuple[int, list[float]]]], None]] = {
    "missing": _check_missing,
    "index_negative": _check_index_negative,
    "index_too_large": _check_index_too_large,
    "duplicate_index": _check_duplicate_index,
    "empty_vector": _check_empty_vector,
    "short_vector": _check_short_vector,
    "nan": _check_nan,
    "infinity": _check_infinity,
    "reversed": _check_reversed,
}


@pytest.mark.parametrize("encoding", ["float", "default"])
@pytest.mark.parametrize("defect", list(CHECKS))
def test_embedding_defects_reach_the_client_as_a_parsed_200(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, defect: Any, encoding: str
) -> None:
    mock_openai.script(Fault.embeddings(defect), path="/v1/embeddings")
    result = _embed(client, encoding)
    CHECKS[defect](_pairs(result))
    record = mock_openai.requests[0]
    assert (record.status, record.fault) == (200, f"embeddings_{defect}")
    assert mock_openai.stats.faults_injected == {f"embeddings_{defect}": 1}
    # Consumed: the next answer is whole again.
    assert _pairs(_embed(client, encoding)) == [(i, _expected(t)) for i, t in enumerate(TEXTS)]


def test_nan_and_infinity_are_bare_json_words_as_some_servers_send(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.embeddings("nan"), Fault.embeddings("infinity"))
    nan = client.embeddings.with_raw_response.create(
        input=["x"], model=EMBED, dimensions=DIMS, encoding_format="float"
    )
    inf = client.embeddings.with_raw_response.create(
        input=["x"], model=EMBED, dimensions=DIMS, encoding_format="float"
    )
    assert "NaN" in nan.text
    assert "Infinity" in inf.text
    with pytest.raises(ValueError, match="NaN"):  # strict JSON refuses it
        json.loads(nan.text, parse_constant=lambda word: (_ for _ in ()).throw(ValueError(word)))


def _b64(vector: list[float]) -> str:
    return base64.b64encode(array.array("f", vector).tobytes()).decode()


def _unb64(encoded: str) -> list[float]:
    return array.array("f", base64.b64decode(encoded)).tolist()


@pytest.mark.parametrize(
    ("defect", "check"),
    [
        ("empty_vector", lambda v: v == []),
        ("short_vector", lambda v: v == _expected("gamma")[:-1]),
        ("nan", lambda v: math.isnan(v[MIDDLE]) and len(v) == DIMS),
        ("infinity", lambda v: v[MIDDLE] == math.inf and len(v) == DIMS),
    ],
)
def test_explicit_base64_answers_carry_the_defect_in_the_encoded_string(
    client: openai.OpenAI, mock_openai: MockOpenAIServer, defect: Any, check: Any
) -> None:
    mock_openai.script(Fault.embeddings(defect))
    result = _embed(client, "base64")
    encoded = [cast(str, d.embedding) for d in result.data]
    assert all(isinstance(e, str) for e in encoded)  # left undecoded, as asked
    assert encoded[:2] == [_b64(_expected("alpha")), _b64(_expected("beta"))]
    assert check(_unb64(encoded[2]))


def test_the_defect_hits_the_entry_at_the_given_position(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(
        Fault.embeddings("missing", at=0),
        Fault.embeddings("duplicate_index", at=0),
        Fault.embeddings("empty_vector", at=1),
    )
    assert [i for i, _ in _pairs(_embed(client, "float"))] == [1, 2]
    assert [i for i, _ in _pairs(_embed(client, "float"))] == [1, 1, 2]  # 0 took index 1
    assert [len(v) for _, v in _pairs(_embed(client, "float"))] == [DIMS, 0, DIMS]


def test_duplicate_index_with_a_single_input_adds_a_copy(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(Fault.embeddings("duplicate_index"))
    pairs = _pairs(_embed(client, "float", ["solo"]))
    assert pairs == [(0, _expected("solo")), (0, _expected("solo"))]


def test_misdirected_or_out_of_range_defects_answer_500_saying_why(
    client: openai.OpenAI, mock_openai: MockOpenAIServer
) -> None:
    mock_openai.script(
        Fault.embeddings("missing", at=5), Fault.embeddings("nan"), Fault.chat("empty")
    )
    with pytest.raises(openai.InternalServerError, match=r"at=5.*outside an answer of 3"):
        _embed(client, "float")
    with pytest.raises(openai.InternalServerError, match="path='/v1/embeddings'"):
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError, match="path='/v1/chat/completions'"):
        _embed(client, "float")


def test_fault_constructors_validate_defects() -> None:
    with pytest.raises(ValueError, match="unknown embeddings defect"):
        Fault.embeddings("gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown chat defect"):
        Fault.chat("nan")  # type: ignore[arg-type]
    assert Fault.embeddings("nan") == Fault.embeddings("nan") != Fault.embeddings("nan", at=0)
    assert Fault.chat("refusal").name == "chat_refusal"
    assert Fault.error_in_body().name == "error_in_body"


# ------------------------------------------------------------------------------ chat


def _ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    messages = [{"role": "user", "content": "what is the weather in Paris"}]
    return client.chat.completions.create(model=CHAT, messages=messages, **kwargs)  # type: ignore[arg-type]


def test_chat_defects_non_streamed(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    mock_openai.script(
        Fault.chat("empty"),
        Fault.chat("content_filter"),
        Fault.chat("refusal"),
        Fault.chat("tool_calls"),
        Fault.chat("no_choices"),
        Fault.chat("missing_choices"),
        path="/v1/chat/completions",
    )
    empty = _ask(client).choices[0]
    assert (empty.message.content, empty.finish_reason) == ("", "stop")
    filtered = _ask(client, n=2).choices
    assert [(c.message.content, c.finish_reason) for c in filtered] == [
        (None, "content_filter"),
        (None, "content_filter"),
    ]
    refused = _ask(client).choices[0]
    assert refused.message.content is None
    assert refused.message.refusal == "I'm sorry, but I can't help with that request."
    assert refused.finish_reason == "stop"
    called = _ask(client).choices[0]
    assert (called.message.content, called.finish_reason) == (None, "tool_calls")
    assert called.message.tool_calls is not None
    call = called.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"query": "what is the weather in Paris"}  # type: ignore[union-attr]
    assert _ask(client).choices == []
    bare = _ask(client)
    assert "choices" not in bare.model_fields_set
    assert bare.usage is not None  # the rest of the answer is intact
    assert [r.status for r in mock_openai.requests] == [200] * 6
    # The next completion is whole.
    assert _ask(client).choices[0].message.content == chat_reply_text(
        "what is the weather in Paris"
    )


def _stream(client: openai.OpenAI) -> list[Any]:
    with _ask(client, stream=True) as stream:
        return list(stream)


def test_chat_defects_streamed(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    mock_openai.script(
        Fault.chat("empty"),
        Fault.chat("content_filter"),
        Fault.chat("refusal"),
        Fault.chat("tool_calls"),
        Fault.chat("no_choices"),
        Fault.chat("missing_choices"),
        path="/v1/chat/completions",
    )

    def text(chunks: list[Any], field: str) -> str:
        return "".join(getattr(c.choices[0].delta, field) or "" for c in chunks if c.choices)

    def finish(chunks: list[Any]) -> str | None:
        return [c.choices[0].finish_reason for c in chunks if c.choices][-1]

    empty = _stream(client)
    assert (text(empty, "content"), finish(empty)) == ("", "stop")
    filtered = _stream(client)
    assert (text(filtered, "content"), finish(filtered)) == ("", "content_filter")
    assert filtered[0].choices[0].delta.content is None
    refused = _stream(client)
    assert text(refused, "refusal") == "I'm sorry, but I can't help with that request."
    assert (text(refused, "content"), finish(refused)) == ("", "stop")
    called = _stream(client)
    assert finish(called) == "tool_calls"
    calls = [tc for c in called if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "call_mock000000000004"
    assert calls[0].function.name == "lookup"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"query": "what is the weather in Paris"}
    no_choices = _stream(client)
    assert no_choices
    assert all(c.choices == [] for c in no_choices)
    missing = _stream(client)
    assert missing
    assert all("choices" not in c.model_fields_set for c in missing)


def test_error_object_in_a_200(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    mock_openai.script(
        Fault.error_in_body(),
        Fault.error_in_body("upstream timed out", error_type="timeout", error_code="upstream"),
    )
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT, messages=[{"role": "user", "content": "x"}]
    )
    assert raw.status_code == 200
    completion = raw.parse()  # the client raises nothing: every field is simply missing
    assert "choices" not in completion.model_fields_set
    assert completion.to_dict()["error"]["type"] == "server_error"
    result = client.embeddings.create(input="x", model=EMBED, encoding_format="float")
    assert result.to_dict() == {
        "error": {
            "message": "upstream timed out",
            "type": "timeout",
            "param": None,
            "code": "upstream",
        }
    }
    # When the client decodes base64 itself, it notices that data is missing.
    mock_openai.script(Fault.error_in_body())
    with pytest.raises(ValueError, match="No embedding data received"):
        client.embeddings.create(input="x", model=EMBED)
    assert mock_openai.stats.responses_by_status == {200: 3}


# ------------------------------------------------------------------------------ leaky proxies

KEY = "sk-proj-echo0123456789abcdefSECRET"


def test_echo_authorization_puts_the_key_in_every_error_message(
    make_client: ClientFactory, mock_openai_factory: ServerFactory
) -> None:
    server = mock_openai_factory(
        echo_authorization=True,
        rpm=1,
        rate_window=60,
        max_inputs_per_request=2,
        size_limit_style="tei",
    )
    server.script(Fault.status(429, retry_after=0), Fault.status(500), Fault.html(502))
    with make_client(server, api_key=KEY) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            client.embeddings.create(input="x", model=EMBED)
        with pytest.raises(openai.InternalServerError) as failed:
            client.embeddings.create(input="x", model=EMBED)
        with pytest.raises(openai.InternalServerError) as html:
            client.embeddings.create(input="x", model=EMBED)
        with pytest.raises(openai.APIStatusError) as too_big:  # TEI's top-level message
            client.embeddings.create(input=["a", "b", "c"], model=EMBED)
        ok = client.embeddings.with_raw_response.create(input="x", model=EMBED)
        with pytest.raises(openai.RateLimitError) as emulated:  # the server's own RPM limit
            client.embeddings.create(input="x", model=EMBED)
    for caught in (limited, failed, emulated):
        message = caught.value.response.json()["error"]["message"]
        assert f"Authorization: Bearer {KEY}" in message
        assert KEY in str(caught.value)  # the official client repeats it in its own message
    assert KEY in html.value.response.text
    assert too_big.value.status_code == 413
    assert KEY in too_big.value.response.json()["message"]
    assert KEY not in ok.text  # successes are untouched


def test_no_echo_by_default(client: openai.OpenAI, mock_openai: MockOpenAIServer) -> None:
    mock_openai.script(Fault.status(500))
    with pytest.raises(openai.InternalServerError) as failed:
        client.embeddings.create(input="x", model=EMBED)
    assert "sk-test" not in failed.value.response.text
