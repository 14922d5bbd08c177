"""Servers the testing kit does not offer yet, kept small and apart so they can be swapped for
named faults of the kit later.

- canned bad answers (`bad_embedding_answers`, `bad_chat_answers`): `Fault` values of kind
  ``respond``; a canned answer ignores the request, so each is built for a known input count;
- `TeiServer`: an OpenAI-compatible embeddings server that refuses requests over a batch size,
  the way text-embeddings-inference does;
- `EchoAuthServer`: answers errors whose message carries the ``Authorization`` header it got,
  as some proxies do.

The two servers are `http.server` threads on loopback: a request log, nothing else.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from resilient_llm.testing import Fault, embedding_vector

__all__ = [
    "ChatAnswer",
    "EchoAuthServer",
    "TeiServer",
    "bad_chat_answers",
    "bad_embedding_answers",
    "chat_fault",
    "embeddings_fault",
]

_JSON = (("content-type", "application/json"),)
# Vectors of the canned answers: valid-looking numbers that belong to no input, so an answer
# taken as data shows up as a wrong vector.
_STRANGER = "a text nobody sent"


def _entry(index: int, embedding: Any) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": embedding}


def embeddings_fault(name: str, data: list[dict[str, Any]] | str, *, raw: bool = False) -> Fault:
    """A 200 embeddings answer with exactly this ``data`` (or this raw body when `raw`)."""
    if raw:
        assert isinstance(data, str)
        body = data.encode()
    else:
        document = {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        body = json.dumps(document).encode()
    return Fault(name=name, kind="respond", status_code=200, headers=_JSON, body=body)


def _b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def bad_embedding_answers(n: int, dims: int) -> dict[str, Fault]:
    """Every way an embeddings answer to a request of `n` inputs can be wrong (SPEC §6 checks).

    Each one fails exactly one check: count, index range, index uniqueness, non-empty, length,
    finite.
    """
    v = embedding_vector(_STRANGER, dims)
    good = [_entry(i, v) for i in range(n)]
    nan = [*v[:-1], float("nan")]
    answers = {
        "one_vector_too_few": good[:-1],
        "extra_index_minus_1": [*good, _entry(-1, v)],
        "index_out_of_range": [*good[:-1], _entry(n, v)],
        # n > 1: index n-2 twice and n-1 missing; n == 1: index 0 twice.
        "duplicated_index": [*good[:-1], _entry(n - 2, v)] if n > 1 else [*good, *good],
        "empty_embedding": [*good[:-1], _entry(n - 1, [])],
        "wrong_length": [*good[:-1], _entry(n - 1, v[:-1])],
        "nan_base64": [*good[:-1], _entry(n - 1, _b64(nan))],
    }
    faults = {name: embeddings_fault(name, data) for name, data in answers.items()}
    # JSON has no NaN, but Python's json module (and some servers) write the bare token.
    entries = ",".join(json.dumps(_entry(i, v)) for i in range(n - 1))  # the last: NaN
    numbers = ",".join([*map(repr, v[:-1]), "NaN"])
    last = f'{{"object":"embedding","index":{n - 1},"embedding":[{numbers}]}}'
    body = (
        '{"object":"list","data":[' + (entries + "," if entries else "") + last + "],"
        '"model":"text-embedding-3-small","usage":{"prompt_tokens":1,"total_tokens":1}}'
    )
    faults["nan_float"] = embeddings_fault("nan_float", body, raw=True)
    return faults


@dataclass(frozen=True)
class ChatAnswer:
    """A canned chat answer and what a `complete()` of it must raise (SPEC §6)."""

    fault: Fault
    retryable: bool  # retried like a 5xx (True), or fails at once (False)
    reason: str  # a regex the error message must match ("" : no requirement)


def _completion(choices: Any, **extra: Any) -> dict[str, Any]:
    document = {
        "id": "chatcmpl-canned",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
    }
    document.update(extra)
    return document


def _choice(message: dict[str, Any], finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None, **message},
        "logprobs": None,
        "finish_reason": finish_reason,
    }


def chat_fault(name: str, document: dict[str, Any]) -> Fault:
    body = json.dumps(document).encode()
    return Fault(name=name, kind="respond", status_code=200, headers=_JSON, body=body)


def bad_chat_answers() -> dict[str, ChatAnswer]:
    """Chat answers that hold no usable text; whether each is retried, and what it must say."""
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": "{}"},
    }
    return {
        "empty_content": ChatAnswer(
            chat_fault("empty_content", _completion([_choice({"content": ""})])), True, ""
        ),
        "null_content": ChatAnswer(
            chat_fault("null_content", _completion([_choice({"content": None})])), True, ""
        ),
        "no_choices": ChatAnswer(chat_fault("no_choices", _completion([])), True, r"(?i)choice"),
        "choices_null": ChatAnswer(
            chat_fault("choices_null", _completion(None)), True, r"(?i)choice"
        ),
        "error_in_200": ChatAnswer(
            chat_fault(
                "error_in_200",
                {
                    "error": {
                        "message": "The upstream model crashed while generating",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            True,
            r"upstream model crashed",
        ),
        "content_filter": ChatAnswer(
            chat_fault(
                "content_filter",
                _completion([_choice({"content": None}, finish_reason="content_filter")]),
            ),
            False,
            r"content.filter",
        ),
        "refusal": ChatAnswer(
            chat_fault(
                "refusal",
                _completion([_choice({"refusal": "I can't help with that request."})]),
            ),
            False,
            r"can't help with that request",
        ),
        "tool_calls": ChatAnswer(
            chat_fault(
                "tool_calls",
                _completion([_choice({"tool_calls": [tool_call]}, finish_reason="tool_calls")]),
            ),
            False,
            r"(?i)tool",
        ),
    }


# -- small purpose-built servers ------------------------------------------------------------------


class _Server:
    """A threaded `http.server` on loopback that hands each POST to `answer`."""

    def __init__(self, answer: Callable[[str, dict[str, str], bytes], tuple[int, bytes]]) -> None:
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply = answer(self.path, headers, body)
                with outer._lock:
                    outer.log.append({"path": self.path, "status": status, "body": body})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads `log`

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> _Server:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.log)


def _embeddings(inputs: list[str], dims: int) -> bytes:
    data = [_entry(i, embedding_vector(text, dims)) for i, text in enumerate(inputs)]
    return json.dumps(
        {
            "object": "list",
            "data": data,
            "model": "tei",
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
        }
    ).encode()


class TeiServer(_Server):
    """``/v1/embeddings`` as text-embeddings-inference serves it, with ``--max-client-batch-size``.

    A request with more inputs is refused with TEI's own message (router/src/http/server.rs):
    ``batch size N > maximum allowed batch size M``, in TEI's OpenAI-compatible error shape
    ``{"message", "code", "type"}``; TEI answers 413 (``ErrorType::Validation``), and 422 in
    older releases and some proxies in front of it. Vectors are the loopback server's, so tests
    compare them with `embedding_vector`. `n_inputs` lists the input count of every request.
    """

    def __init__(self, max_batch: int = 32, status: int = 413, dims: int = 8) -> None:
        self.max_batch = max_batch
        self.status = status
        super().__init__(self._answer)
        self._dims = dims

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        payload = json.loads(body)
        inputs = payload["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if len(inputs) > self.max_batch:
            message = f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch}"
            error = {"message": message, "code": self.status, "type": "Validation"}
            return self.status, json.dumps(error).encode()
        # TEI serves float vectors whatever `encoding_format` asks (it ignores the field).
        return 200, _embeddings(inputs, payload.get("dimensions") or self._dims)

    def sizes(self) -> list[tuple[int, int]]:
        """(input count, status) of every request, in arrival order."""
        return [(len(_inputs(r["body"])), r["status"]) for r in self.requests()]


def _inputs(body: bytes) -> list[str]:
    inputs = json.loads(body)["input"]
    return [inputs] if isinstance(inputs, str) else list(inputs)


class EchoAuthServer(_Server):
    """Answers every request with an error that quotes the ``Authorization`` header it received.

    ``statuses`` is consumed one per request, then its last value repeats. The message quotes
    the key bare and the whole header, as proxies that log "Incorrect API key provided: ..." do.
    No ``Retry-After``: the client backs off by its own policy.
    """

    def __init__(self, statuses: tuple[int, ...] = (429, 500)) -> None:
        self._statuses: Iterator[int] = iter(statuses)
        self._last = statuses[-1]
        super().__init__(self._answer)

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        status = next(self._statuses, self._last)
        auth = headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        message = (
            f"Incorrect API key provided: {token}. Upstream refused the request "
            f"(Authorization: {auth}); try again later"
        )
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
            status, "server_error"
        )
        error = {"message": message, "type": kind, "param": None, "code": kind}
        return status, json.dumps({"error": error}).encode()
