"""Answer checks: nothing the server sends becomes data before it is checked (SPEC §6)."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from resilient_llm._answers import check_completion, completion_text, decode_embeddings
from resilient_llm._exceptions import InvalidInput, InvalidResponse
from resilient_llm._inputs import check_text, text_problem


def body(*entries: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"object": "list", "data": list(entries), **extra}).encode()


def entry(index: object, embedding: object) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": embedding}


def b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_a_good_answer_in_any_order_and_encoding_is_decoded_in_input_order() -> None:
    document = body(
        entry(1, b64([0.5, 1.5])),
        entry(0, [0.25, 2.0]),
        usage={"prompt_tokens": 3, "total_tokens": 3},
    )
    payload = decode_embeddings(document, 2, dimensions=2)
    assert payload.vectors == [[0.25, 2.0], [0.5, 1.5]]
    assert (payload.prompt_tokens, payload.total_tokens) == (3, 3)


@pytest.mark.parametrize(
    ("document", "expected", "message"),
    [
        (body(entry(0, [1.0])), 2, "1 vectors for 2 inputs"),
        (body(entry(0, [1.0]), entry(1, [1.0]), entry(-1, [1.0])), 2, "3 vectors for 2 inputs"),
        (body(entry(0, [1.0]), entry(-1, [1.0])), 2, "index -1"),
        (body(entry(0, [1.0]), entry(2, [1.0])), 2, "index 2"),
        (body(entry(0, [1.0]), entry(0, [2.0])), 2, "index 0 twice"),
        (body(entry(0, [1.0]), entry("1", [2.0])), 2, "index '1'"),
        (body(entry(0, [1.0]), entry(True, [2.0])), 2, "index True"),
        (body(entry(0, [])), 1, "is empty"),
        (body(entry(0, "")), 1, "is empty"),
        (body(entry(0, [1.0, 2.0]), entry(1, [1.0])), 2, "has 1 values"),
        (body(entry(0, [1.0, math.nan])), 1, "NaN or infinity"),
        (b'{"object": "list", "data": [{"index": 0, "embedding": [1.0, NaN]}]}', 1, "NaN"),
        (body(entry(0, b64([1.0, math.inf]))), 1, "NaN or infinity"),
        (body(entry(0, ["1.0"])), 1, "cannot be read"),
        (body(entry(0, "not base64!")), 1, "cannot be read"),
        (body(entry(0, None)), 1, "cannot be read"),
        (b"<html>502 Bad Gateway</html>", 1, "not JSON"),
        (b"[]", 1, "not an object"),
        (b'{"object": "list"}', 1, "no 'data'"),
    ],
)
def test_a_bad_answer_is_never_data(document: bytes, expected: int, message: str) -> None:
    with pytest.raises(InvalidResponse, match=message) as caught:
        decode_embeddings(document, expected)
    assert caught.value.retryable


def test_vectors_must_have_the_requested_dimensions() -> None:
    with pytest.raises(InvalidResponse, match="dimensions: 3"):
        decode_embeddings(body(entry(0, [1.0, 2.0])), 1, dimensions=3)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ({"message": "overloaded", "type": "server_error"}, True),
        ({"message": "bad model", "type": "invalid_request_error"}, False),
    ],
)
def test_a_200_whose_body_is_an_error_is_that_error(error: dict[str, str], retryable: bool) -> None:
    with pytest.raises(InvalidResponse, match=error["message"]) as caught:
        decode_embeddings(json.dumps({"error": error}).encode(), 1)
    assert caught.value.retryable is retryable


def completion(**choice: Any) -> ChatCompletion:
    message = {"role": "assistant", "content": "hi", **choice.pop("message", {})}
    return ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message, **choice}],
        }
    )


def test_text_of_a_good_completion() -> None:
    assert completion_text(completion()) == "hi"
    # "length" with text is text.
    assert completion_text(completion(finish_reason="length")) == "hi"


@pytest.mark.parametrize(
    ("answer", "message", "retryable"),
    [
        (completion(message={"content": ""}), "no text", True),
        (completion(message={"content": "   "}), "no text", True),
        (completion(message={"content": None}, finish_reason="content_filter"), "filter", False),
        (completion(message={"content": None, "refusal": "I can't"}), "refused: I can't", False),
        (
            completion(
                message={
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                finish_reason="tool_calls",
            ),
            "tool calls",
            False,
        ),
    ],
)
def test_an_answer_without_text_fails_with_the_reason(
    answer: ChatCompletion, message: str, retryable: bool
) -> None:
    with pytest.raises(InvalidResponse, match=message) as caught:
        completion_text(answer)
    assert caught.value.retryable is retryable


def test_a_completion_without_choices_or_with_an_error_body_is_refused() -> None:
    empty = ChatCompletion.construct(id="c", choices=[], created=0, model="m")
    with pytest.raises(InvalidResponse, match="no choices"):
        check_completion(empty)
    missing = ChatCompletion.construct(id="c", created=0, model="m")
    with pytest.raises(InvalidResponse, match="no choices"):
        check_completion(missing)
    error = ChatCompletion.construct(error={"message": "quota", "type": "server_error"})
    with pytest.raises(InvalidResponse, match="answered 200 with an error: quota"):
        check_completion(error)
    with pytest.raises(InvalidResponse, match="not a chat completion"):
        check_completion("<html>hello</html>")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (42, TypeError, "expected str, got int"),
        (b"x", TypeError, "decode it first"),
        ("", InvalidInput, "empty string"),
        ("  ", InvalidInput, "whitespace-only"),
        ("a \ud800 b", InvalidInput, r"lone surrogate U\+D800 at position 2"),
    ],
)
def test_the_one_text_check(value: object, error: type[Exception], message: str) -> None:
    assert text_problem(value) is not None
    with pytest.raises(error, match=message) as caught:
        check_text(value, "prompt")
    assert str(caught.value).startswith("prompt: ")
    assert text_problem("fine") is None
