"""What the server answers a request that was read: the checks in the order a real server makes
them (key, Batch API, validity, poison, rate limits), then the endpoint's answer (no I/O)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass

import h11

from ._api import parse_request, respond
from ._batches import BatchEmulator
from ._faults import Fault
from ._limits import SizeLimits
from ._ratelimit import RateLimited, SlidingWindowLimiter
from ._reply import Reply, error_reply, header_block
from ._request import ApiRequest, poison_refusal

__all__ = ["Router", "echo_authorization"]

logger = logging.getLogger("resilient_llm.testing")


@dataclass(frozen=True, eq=False)
class Router:
    """Answers requests: the server's checks, then its endpoints or its Batch API.

    Attributes:
        limits: The opt-in size limits (None: OpenAI's own only).
        auth: The ``Authorization`` header every request must carry, or None.
        poison: The poison marker, or None.
        limiter: The RPM/TPM limiter, or None.
        batches: The Batch API.
    """

    limits: SizeLimits | None
    auth: bytes | None
    poison: str | None
    limiter: SlidingWindowLimiter | None
    batches: BatchEmulator

    def parse(self, request: h11.Request, body: bytes) -> ApiRequest:
        """The request as the endpoints see it, checked against the size limits."""
        return parse_request(
            request.method.decode("ascii", "replace"),
            request.target.decode("latin-1"),
            body,
            self.limits,
        )

    def answer(
        self, api: ApiRequest, request: h11.Request, number: int, fault: Fault | None, body: bytes
    ) -> Reply:
        """Answer `api` (parsed from `request` and `body`), with the defect of an ``alter`` fault.

        Args:
            api: The parsed request.
            request: The request line and headers.
            number: The request's number, for response ids.
            fault: The fault the request drew, if any.
            body: The request body.
        """
        if self.auth is not None:
            given = next((v for k, v in request.headers if k == b"authorization"), None)
            if given != self.auth:
                return error_reply(
                    401,
                    "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "authentication_error",
                    "invalid_api_key",
                )
        if self.batches.serves(api.path):
            return self.batches.answer(
                api.method, request.target.decode("latin-1"), request.headers, body
            )
        if api.error is not None:
            return api.error
        refusal = poison_refusal(api, self.poison)
        if refusal is not None:
            return refusal
        if self.limiter is not None and api.endpoint in ("embeddings", "chat", "responses"):
            limited = self.limiter.acquire(time.monotonic(), api.prompt_tokens)
            if limited is not None:
                return _rate_limited(limited, api.model)
        if fault is None or fault.kind != "alter":
            return respond(api, number)
        try:
            return respond(api, number, fault.defect, fault.at)
        except ValueError as exc:
            # A fault scripted for the wrong endpoint: say so to the test, loudly.
            logger.error("mock server: %s", exc)
            return error_reply(500, f"mock server: {exc}", "server_error")


def echo_authorization(reply: Reply, authorization: str) -> Reply:
    """Write the request's Authorization header into an error's message, as leaky proxies do."""
    note = f" [proxy: upstream request failed; request headers: Authorization: {authorization}]"
    body = reply.body + note.encode()
    with contextlib.suppress(ValueError):
        document = json.loads(reply.body)
        holder = document.get("error") if isinstance(document, dict) else None
        if not isinstance(holder, dict):
            holder = document  # TEI-style: the message at the top level
        if isinstance(holder, dict) and isinstance(holder.get("message"), str):
            holder["message"] += note
            body = json.dumps(document).encode()
    return Reply(reply.status, reply.headers, body, reply.chunks, reply.prompt_tokens)


def _rate_limited(refusal: RateLimited, model: str | None) -> Reply:
    unit = "requests per min (RPM)" if refusal.kind == "requests" else "tokens per min (TPM)"
    headers = [
        (f"x-ratelimit-limit-{refusal.kind}", str(refusal.limit)),
        (f"x-ratelimit-remaining-{refusal.kind}", str(max(0, refusal.limit - refusal.used))),
    ]
    if refusal.retry_after is None:
        hint = "The request is larger than the limit and can never be admitted."
    else:
        wait = max(0.0, refusal.retry_after)
        hint = f"Please try again in {wait:.3f}s."
        # Retry-After takes whole seconds (rounded up, never early); the ms header is exact.
        headers.append(("retry-after", str(math.ceil(wait))))
        headers.append(("retry-after-ms", str(math.ceil(wait * 1000))))
        headers.append((f"x-ratelimit-reset-{refusal.kind}", f"{wait:.3f}s"))
    message = (
        f"Rate limit reached for {model} on {unit}: Limit {refusal.limit}, Used {refusal.used}, "
        f"Requested {refusal.requested}. {hint}"
    )
    return error_reply(
        429, message, refusal.kind, "rate_limit_exceeded", None, header_block(headers)
    )
