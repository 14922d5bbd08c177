"""Reading a batch's output and error files: every line back to its input, checked, classified.

No network here. A line's answer is trusted only after the same checks the live calls make
(`decode_embedding`, `completion_text`); a 200 that fails them is an error retried like a 5xx.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from .._exceptions import ResilientLLMError
from ._errors import BatchLineError
from ._internals import completion_text, decode_embedding, httpx
from ._plan import index_of

__all__ = [
    "Answer",
    "Decoder",
    "answers_of",
    "chat_decoder",
    "embeddings_decoder",
    "read_answers",
    "status_error",
]

logger = logging.getLogger("resilient_llm")

#: ``decode(body, count) -> values``: the checked values of a line's `count` inputs.
Decoder = Callable[[dict[str, Any], int], list[Any]]

# What the official client raises for each status (its `_make_status_error`).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}
_TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Answer:
    """One input's answer in a batch.

    Attributes:
        index: the input.
        value: the checked value (``error`` is ``None``).
        error: why there is no value.
        transient: worth sending again (429, 5xx, expired, an answer that failed its checks).
        rate_limited: the line was answered 429.
        expired: the batch expired before the line ran.
        cancelled: the batch was cancelled before the line ran.
        shared: the line was rejected (400/422) with other inputs: any one of them may be the
            bad one, so it is worth sending alone (the live fallback bisects).
    """

    index: int
    value: Any = None
    error: BaseException | None = None
    transient: bool = False
    rate_limited: bool = False
    expired: bool = False
    cancelled: bool = False
    shared: bool = False


def embeddings_decoder(dimensions: int | None) -> Decoder:
    """``body -> vectors``, with the embeddings answer checks."""

    def decode(body: dict[str, Any], count: int) -> list[Any]:
        return list(decode_embedding(body, count, dimensions=dimensions).vectors)

    return decode


def chat_decoder() -> Decoder:
    """``body -> text``: a chat completion's first choice, never empty."""

    def decode(body: dict[str, Any], count: int) -> list[Any]:
        try:
            completion = ChatCompletion.model_validate(body)
        except ValueError as exc:
            raise ResilientLLMError(f"malformed chat completion: {exc}") from exc
        return [completion_text(completion)]

    return decode


def status_error(status: int, body: object, url: str) -> openai.APIStatusError:
    """The error the official client would raise for a line answered `status` with `body`."""
    response = httpx.Response(status, request=httpx.Request("POST", url), json=body)
    inner = body.get("error", body) if isinstance(body, dict) else body
    cls = _STATUS_ERRORS.get(status) or (
        openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    return cls(f"Error code: {status} - {body}", response=response, body=inner)


def _is_transient_status(status: int, body: object) -> bool:
    if status == 429:
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code != "insufficient_quota"
    return status in _TRANSIENT_STATUSES or status >= 500


def answers_of(
    first: int, count: int, document: dict[str, Any], decode: Decoder, url: str
) -> list[Answer]:
    """Classify one output or error line: one answer per input it holds."""
    indices = range(first, first + count)
    response = document.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = response["status_code"]
        body = response.get("body")
        if 200 <= status < 300:
            error: BaseException
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                error = ResilientLLMError(f"the answer is an error: {body['error']}")
                return [Answer(index, error=error, transient=True) for index in indices]
            try:
                if not isinstance(body, dict):
                    raise ResilientLLMError(f"the answer is not a JSON object: {body!r:.80}")
                return [
                    Answer(index, value=value)
                    for index, value in zip(indices, decode(body, count), strict=True)
                ]
            except (ResilientLLMError, ValueError, KeyError, TypeError) as exc:
                retryable = getattr(exc, "retryable", True) is not False
                return [Answer(index, error=exc, transient=retryable) for index in indices]
        error = status_error(status, body, url)
        transient = _is_transient_status(status, body)
        shared = count > 1 and status in (400, 422)
        return [
            Answer(
                index,
                error=error,
                transient=transient,
                rate_limited=status == 429,
                shared=shared,
            )
            for index in indices
        ]
    problem = document.get("error")
    code = str(problem.get("code")) if isinstance(problem, dict) else "no_answer"
    message = str(problem.get("message")) if isinstance(problem, dict) else "no answer"
    error = BatchLineError(f"{code}: {message}", code=code)
    return [
        Answer(
            index,
            error=error,
            transient=True,
            expired=code == "batch_expired",
            cancelled=code == "batch_cancelled",
        )
        for index in indices
    ]


def read_answers(data: bytes, expected: set[int], decode: Decoder, url: str) -> Iterator[Answer]:
    """The answers in one output or error file, for the inputs in `expected` only."""
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            ids = index_of(document.get("custom_id"))
        except (ValueError, AttributeError):
            logger.warning("batch result file: line %d is not a JSON object; ignored", number)
            continue
        if ids is None or not expected.issuperset(range(ids[0], ids[0] + ids[1])):
            logger.warning(
                "batch result file: line %d answers custom_id %r, not one of this batch's; ignored",
                number,
                document.get("custom_id"),
            )
            continue
        yield from answers_of(ids[0], ids[1], document, decode, url)
