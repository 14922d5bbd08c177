"""What a rejected embeddings request means: a bad input, a request too large, or a bad request.

Pure judgments; the embeddings program (:mod:`.programs`) acts on them:

- **Too large** (:func:`size_refusal`): HTTP 413, or a 400/422 saying the batch, the number of
  inputs or the tokens of the request exceed the server's limit (the wording of
  text-embeddings-inference, vLLM, proxies and OpenAI). The request is re-sent split, and the
  smaller size (:func:`smaller_size`, from the number the server names when it names one) is kept
  for the rest of the job.
- **A bad input** (:func:`is_input_rejection`: any other 400/422): the request is split in halves,
  and the halves again, down to the single bad inputs, however many share the request; two
  halves failing alike prove nothing, since each may hold a bad input.
- **A bad request** (unknown model, bad parameter): no single input causes it. Before bisecting
  in a batch where no request has succeeded yet, one *probe* (a one-input request with
  :data:`PROBE_TEXT`, an input that cannot be the bad one) tells the two apart; if the probe is
  rejected too, the batch ends with that error. So a bad request costs one extra request, and
  ``k`` bad inputs among ``n`` cost at most ``2 k ceil(log2 n)`` more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "PROBE_TEXT",
    "SizeRefusal",
    "bisection_request_bound",
    "is_input_rejection",
    "size_refusal",
    "smaller_size",
]

#: The innocuous one-input request that tells a bad request from a bad input.
PROBE_TEXT = "hello"

_INPUT_REJECTION_STATUSES = frozenset({400, 422})

_ABOUT_SIZE = re.compile(
    r"batch[ _]size|too many inputs|number of inputs|max(?:imum)?[ _]client[ _]batch"
    r"|payload too large|request entity too large|(?:\$\.)?input'? (?:array )?is too long"
    r"|tokens? per request|(?:inputs?|items|texts) per request|array too long"
    r"|maximum (?:batch|request) size|max(?:imum)? number of inputs|request size is too large"
    r"|length limit exceeded",
    re.IGNORECASE,
)
_SIZE_HINTS = (
    re.compile(r"maximum allowed batch size\D{0,10}(\d+)", re.IGNORECASE),
    re.compile(r"max(?:imum)? number of inputs is\s*(\d+)", re.IGNORECASE),
    re.compile(r"max(?:imum)?[ _](?:client[ _])?batch[ _]size\D{0,20}(\d+)", re.IGNORECASE),
    re.compile(r"(?:at most|maximum (?:length )?is|limit of|up to|no more than)\s+(\d+)", re.I),
    re.compile(r"[<>]=?\s*(\d+)\s*(?:inputs|items|texts)", re.IGNORECASE),
)


def _status(exc: object) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _message(exc: object) -> str:
    # openai's .message wraps the body's repr ("Error code: 400 - {...}"); the server's own
    # message is in the body. Either will do for matching words.
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
        if isinstance(body.get("error"), str):
            return str(body["error"])
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) else str(exc)


@dataclass(frozen=True, slots=True)
class SizeRefusal:
    """A request refused for its size.

    Attributes:
        limit: the number of inputs the server said it accepts, when it said one.
    """

    limit: int | None


def size_refusal(exc: object) -> SizeRefusal | None:
    """Whether the server refused the request for its size (and the limit it named, if any)."""
    status = _status(exc)
    if status == 413:
        text = _message(exc)
    elif status in _INPUT_REJECTION_STATUSES:
        text = _message(exc)
        if not _ABOUT_SIZE.search(text):
            return None
    else:
        return None
    for pattern in _SIZE_HINTS:
        match = pattern.search(text)
        # A limit of tokens is not a number of inputs: halve instead.
        if match and "token" not in text[match.end() : match.end() + 12].lower():
            limit = int(match.group(1))
            if limit >= 1:
                return SizeRefusal(limit)
    return SizeRefusal(None)


def is_input_rejection(exc: object) -> bool:
    """Whether the server rejected the request as invalid (400/422), not for its size."""
    return _status(exc) in _INPUT_REJECTION_STATUSES and size_refusal(exc) is None


def smaller_size(size: int, refusal: SizeRefusal) -> int:
    """The inputs per request to use after a request of ``size`` inputs was refused."""
    if refusal.limit is not None and refusal.limit < size:
        return refusal.limit
    return max(1, size // 2)


def bisection_request_bound(n: int, bad: int = 1) -> int:
    """Worst-case requests to isolate ``bad`` inputs among ``n``, the first request included.

    Each level sends both halves of each rejected part: ``1 + 2 * bad * ceil(log2 n)``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    # (n - 1).bit_length() is ceil(log2 n), without floating point.
    return 1 + 2 * max(1, bad) * (n - 1).bit_length()
