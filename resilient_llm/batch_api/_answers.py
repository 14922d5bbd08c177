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

from .. import ResilientLLMError
from ._errors import BatchLineError
from ._internals import completion_text, decode_embedding, httpx
from ._plan import index_of

__all__ = [
    "Answer",
    "Decoder",
    "chat_decoder",
    "embeddings_decoder",
    "read_answers",
    "status_error",
]

logger = logging.getLogger("resilient_llm")

Decoder = Callable[[dict[str, Any]], Any]

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
    """

    index: int
    value: Any = None
    error: BaseException | None = None
    transient: bool = False
    rate_limited: bool = False
    expired: bool = False
    cancelled: bool = False


def embeddings_decoder(dimensions: int | None) -> Decoder:
    """``body -> vector``, with the embeddings answer checks."""

    def decode(body: dict[str, Any]) -> list[float]:
        return decode_embedding(body, dimensions=dimensions).vectors[0]

    return decode


def chat_decoder() -> Decoder:
    """``body -> text``: a chat completion's first choice, never empty."""

    def decode(body: dict[str, Any]) -> str:
        try:
            completion = ChatCompletion.model_validate(body)
        except ValueError as exc:
            raise ResilientLLMError(f"malformed chat completion: {exc}") from exc
        return completion_text(completion)

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


def answer_of(index: int, document: dict[str, Any], decode: Decoder, url: str) -> Answer:
    """Classify one output or error line."""
    response = document.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = response["status_code"]
        body = response.get("body")
        if 200 <= status < 300:
            if isinstance(body, dict) and "error" in body and isinstance(body["error"], dict):
                error = ResilientLLMError(f"the answer is an error: {body['error']}")
                return Answer(index, error=error, transient=True)
            try:
                if not isinstance(body, dict):
                    raise ResilientLLMError(f"the answer is not a JSON object: {body!r:.80}")
                return Answer(index, value=decode(body))
            except (ResilientLLMError, ValueError, KeyError, TypeError) as exc:
                retryable = getattr(exc, "retryable", True) is not False
                return Answer(index, error=exc, transient=retryable)
        return Answer(
            index,
            error=status_error(status, body, url),
            transient=_is_transient_status(status, body),
            rate_limited=status == 429,
        )
    problem = document.get("error")
    code = str(problem.get("code")) if isinstance(problem, dict) else "no_answer"
    message = str(problem.get("message")) if isinstance(problem, dict) else "no answer"
    return Answer(
        index,
        error=BatchLineError(f"{code}: {message}", code=code),
        transient=True,
        expired=code == "batch_expired",
        cancelled=code == "batch_cancelled",
    )


def read_answers(data: bytes, expected: set[int], decode: Decoder, url: str) -> Iterator[Answer]:
    """The answers in one output or error file, for the inputs in `expected` only."""
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            index = index_of(document.get("custom_id"))
        except (ValueError, AttributeError):
            logger.warning("batch result file: line %d is not a JSON object; ignored", number)
            continue
        if index is None or index not in expected:
            logger.warning(
                "batch result file: line %d answers custom_id %r, not one of this batch's; ignored",
                number,
                document.get("custom_id"),
            )
            continue
        yield answer_of(index, document, decode, url)
