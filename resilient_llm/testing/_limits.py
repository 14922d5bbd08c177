"""Request size limits, refused in the words of the real servers that enforce them (no I/O).

Each style answers a limit the way that server does; where a server has no such limit of its
own, the combination is refused when the server is made, rather than answered in made-up words.

Sources of the wordings (status, body):

- ``"openai"``: too many inputs, 400 ``'$.input' is invalid. Please check the API reference:
  https://platform.openai.com/docs/api-reference.`` (reported in embeddings-benchmark/mteb#1200:
  OpenAI does not say that the array was too long); an input over the context, 400 ``This
  model's maximum context length is ...``. Its body-size limit is not documented: the kit
  answers 413 with an OpenAI error object in its own words.
- ``"azure"``: too many inputs, 400 ``Too many inputs. The max number of inputs is N. ...``
  (openai/openai-cookbook#252, langchain-ai/langchain#9112); the context error is OpenAI's.
- ``"tei"`` (Hugging Face text-embeddings-inference, ``router/src/http/server.rs``): too many
  inputs, 413 ``{"message": "batch size 200 > maximum allowed batch size 32", "code": 413,
  "type": "Validation"}`` (``ErrorType::Validation`` maps to 413 and the OpenAI route
  serialises ``OpenAICompatErrorResponse``); an input over ``max_input_length``, 413 ``Input
  validation error: `inputs` must have less than 512 tokens. Given: 785``; a body over
  ``--payload-limit``, axum's ``DefaultBodyLimit``: 413 ``text/plain`` ``Failed to buffer the
  request body: length limit exceeded``.
- ``"vllm"``: an input over ``max_model_len``, 400 ``{"error": {"message": "This model's
  maximum context length is 8192 tokens. However, you requested 10288 tokens in the input for
  embedding generation. Please reduce the length of the input.", "type": "BadRequestError",
  "param": null, "code": 400}}`` (vllm-project/vllm#24560). vLLM limits neither the number of
  inputs nor the body size.
- ``"litellm"`` (LiteLLM proxy, ``general_settings.max_request_size_mb``): 400 ``{"error":
  {"message": "Request size is too large. Request size is 0.5 MB. Max size is 0.25 MB",
  "type": "bad_request_error", "param": "content-length", "code": 400}}``. Other limits are
  the upstream's, passed through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from ._reply import JSON_HEADERS, Reply, error_reply

__all__ = ["SIZE_LIMIT_STYLES", "SizeLimit", "SizeLimitStyle", "SizeLimits", "context_refusal"]

SizeLimitStyle = Literal["openai", "azure", "tei", "vllm", "litellm"]
SizeLimit = Literal["inputs", "bytes", "input_tokens"]
SIZE_LIMIT_STYLES: tuple[str, ...] = get_args(SizeLimitStyle)

# Which limits each style's server enforces itself.
_SUPPORTED: dict[str, frozenset[str]] = {
    "openai": frozenset({"inputs", "bytes", "input_tokens"}),
    "azure": frozenset({"inputs", "input_tokens"}),
    "tei": frozenset({"inputs", "bytes", "input_tokens"}),
    "vllm": frozenset({"input_tokens"}),
    "litellm": frozenset({"bytes"}),
}
_OPTION: dict[str, str] = {
    "inputs": "max_inputs_per_request",
    "bytes": "max_request_bytes",
    "input_tokens": "max_input_tokens",
}


def _tei(message: str) -> Reply:
    body = json.dumps({"message": message, "code": 413, "type": "Validation"})
    return Reply(413, JSON_HEADERS, body.encode())


def _vllm(message: str) -> Reply:
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    return Reply(400, JSON_HEADERS, json.dumps(body).encode())


@dataclass(frozen=True)
class SizeLimits:
    """The opt-in size limits of a `MockOpenAIServer` and the style it refuses them in.

    Attributes:
        max_inputs_per_request: Most embedding inputs in one request.
        max_request_bytes: Largest request body, in bytes (any POST).
        max_input_tokens: Most tokens in one embedding input (a self-hosted model's context).
        style: Whose wording the refusals use.
    """

    max_inputs_per_request: int | None = None
    max_request_bytes: int | None = None
    max_input_tokens: int | None = None
    style: SizeLimitStyle = "openai"

    def __post_init__(self) -> None:
        if self.style not in SIZE_LIMIT_STYLES:
            raise ValueError(
                f"size_limit_style must be one of {SIZE_LIMIT_STYLES}, got {self.style!r}"
            )
        for limit, option in _OPTION.items():
            value = getattr(self, option)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an int >= 1, got {value!r}")
            if limit not in _SUPPORTED[self.style]:
                served = ", ".join(_OPTION[k] for k in sorted(_SUPPORTED[self.style]))
                raise ValueError(
                    f"{option} has no counterpart in a {self.style!r} server, so there are no "
                    f"real words to refuse it in; with size_limit_style={self.style!r} use "
                    f"{served}"
                )

    def check(self, limit: SizeLimit, value: int) -> Reply | None:
        """Refuse what is over one of the limits, in `style`'s words.

        Args:
            limit: Which: ``"bytes"`` (a body's size, against `max_request_bytes`),
                ``"inputs"`` (an embeddings request's inputs, against
                `max_inputs_per_request`) or ``"input_tokens"`` (one embedding input's
                tokens, against `max_input_tokens`).
            value: The size, count or tokens.

        Returns:
            The refusal, or None when the value fits (or that limit is not set).
        """
        bound: int | None = getattr(self, _OPTION[limit])
        if bound is None or value <= bound:
            return None
        return _REFUSALS[limit](bound, value, self.style)


def _bytes_refusal(limit: int, size: int, style: str) -> Reply:
    if style == "tei":
        return Reply(
            413,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"Failed to buffer the request body: length limit exceeded",
        )
    if style == "litellm":
        message = (
            f"Request size is too large. Request size is {size / 1024 / 1024} MB. "
            f"Max size is {limit / 1024 / 1024} MB"
        )
        error = {
            "message": message,
            "type": "bad_request_error",
            "param": "content-length",
            "code": 400,
        }
        return Reply(400, JSON_HEADERS, json.dumps({"error": error}).encode())
    return error_reply(
        413, f"Request body too large: {size} bytes, at most {limit}.", "invalid_request_error"
    )


def _inputs_refusal(limit: int, count: int, style: str) -> Reply:
    if style == "tei":
        return _tei(f"batch size {count} > maximum allowed batch size {limit}")
    if style == "azure":
        return error_reply(
            400,
            f"Too many inputs. The max number of inputs is {limit}.  We hope to increase the "
            "number of inputs per request soon. Please contact us through an Azure support "
            "request at: https://go.microsoft.com/fwlink/?linkid=2213926 for further "
            "questions.",
        )
    return error_reply(
        400,
        "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference.",
    )


def context_refusal(limit: int, tokens: int, style: str = "openai") -> Reply:
    """Refuse an embedding input over the model's context, in `style`'s words.

    Args:
        limit: The context in tokens.
        tokens: Tokens in the input.
        style: A `SizeLimitStyle`.

    Returns:
        The refusal.
    """
    if style == "tei":
        return _tei(
            f"Input validation error: `inputs` must have less than {limit} tokens. Given: {tokens}"
        )
    if style == "vllm":
        return _vllm(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{tokens} tokens in the input for embedding generation. Please reduce the length "
            "of the input."
        )
    return error_reply(
        400,
        f"This model's maximum context length is {limit} tokens, however you requested {tokens} "
        f"tokens ({tokens} in your prompt; 0 for the completion). Please reduce your prompt; or "
        "completion length.",
    )


_REFUSALS: dict[str, Callable[[int, int, str], Reply]] = {
    "bytes": _bytes_refusal,
    "inputs": _inputs_refusal,
    "input_tokens": context_refusal,
}
