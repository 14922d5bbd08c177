"""The one line a person reads for an error, and durations rounded for people."""

from __future__ import annotations

import errno
import itertools

import anyio
import pytest

from resilient_llm import DeadlineExceeded, InvalidInput, ServerUnreachable
from resilient_llm._http import httpx
from resilient_llm._messages import (
    connection_cause,
    describe,
    duration,
    error_message,
    one_line,
    seconds,
    server_message,
)
from resilient_llm._secrets import register

from .sdk_objects import connection_error, status_error


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.49997, "1.5 s"),
        (4.9912, "4.99 s"),
        (30.0, "30 s"),
        (0.0123, "0.0123 s"),
        (0.0004, "0.0004 s"),
        (120.4, "120 s"),
        (1250.0, "1,250 s"),
    ],
)
def test_seconds(value: float, text: str) -> None:
    assert seconds(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.004, "< 0.01 s"),
        (0.0254, "0.03 s"),
        (1.49997, "1.5 s"),
        (12.345, "12.3 s"),
        (99.94, "99.9 s"),
        (125.0, "2 min 5 s"),
        (7385.0, "2 h 3 min"),
    ],
)
def test_duration(value: float, text: str) -> None:
    assert duration(value) == text


def test_an_os_error_reads_as_its_reason_and_file() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl")
    assert describe(full) == "No space left on device: /data/out.jsonl"
    denied = PermissionError(errno.EACCES, "Permission denied", "/sys/f.jsonl")
    assert describe(denied) == "Permission denied: /sys/f.jsonl"
    assert describe(OSError(errno.EFBIG, "File too large")) == "File too large"
    moved = OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")
    assert describe(moved) == "Invalid cross-device link: a → b"
    # An OSError of our own carries its message, not an errno.
    unreachable = ServerUnreachable("http://127.0.0.1:9/v1", attempts=3)
    assert describe(unreachable).startswith(
        "ServerUnreachable: cannot reach the server at http://127.0.0.1:9/v1: 3 connection"
    )


def test_an_http_error_carries_the_servers_own_message_once() -> None:
    error = status_error(
        401, body={"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}
    )
    assert "Error code: 401" in str(error)  # what openai says: the status twice, a repr
    assert describe(error) == "AuthenticationError (HTTP 401): Incorrect API key provided."
    assert error_message(error) == "Incorrect API key provided."
    bare = status_error(404, body={})
    assert describe(bare) == "NotFoundError (HTTP 404): {}"


def test_one_line_reads_a_failure_record_as_describe_reads_the_error() -> None:
    error = status_error(429, body={"error": {"message": "Slow down.", "type": "requests"}})
    recorded = one_line("RateLimitError", "Error code: 429 - Slow down.", status=429)
    assert recorded == describe(error) == "RateLimitError (HTTP 429): Slow down."
    assert (
        one_line("InvalidInput", "expected str, got int") == "InvalidInput: expected str, got int"
    )
    assert one_line("MalformedLine", "") == "MalformedLine"


def test_lines_are_collapsed_cut_and_masked() -> None:
    key = "plain-key-0123456789abcdef"
    register(key)
    error = InvalidInput(f"bad\n\n  input   {key} " + "x" * 500)
    line = describe(error, limit=60)
    assert "\n" not in line
    assert key not in line
    assert line.startswith("InvalidInput: bad input *** xxx")
    assert len(line) == len("InvalidInput: ") + 60
    assert line.endswith("…")


def test_the_librarys_own_errors_keep_their_words() -> None:
    error = DeadlineExceeded(
        "embeddings",
        deadline=5.0,
        elapsed=0.0123,
        attempts=1,
        reason="HTTP 429; the server asked to wait 30 s and only 4.99 s of the deadline were left",
    )
    assert describe(error) == (
        "DeadlineExceeded: embeddings: deadline of 5 s exceeded after 1 attempt in 0.0123 s: "
        "HTTP 429; the server asked to wait 30 s and only 4.99 s of the deadline were left"
    )
    assert describe(connection_error()) == "APIConnectionError: Connection error."
    assert describe(ValueError()) == "ValueError"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Error code: 401 - Incorrect API key provided.", "Incorrect API key provided."),
        (  # openai 2.x: the repr of the JSON body
            "Error code: 401 - {'error': {'message': 'Incorrect API key provided.', "
            "'type': 'invalid_request_error', 'code': 'invalid_api_key', 'param': None}}",
            "Incorrect API key provided.",
        ),
        ("Error code: 401 - {'message': 'Bad key.'}", "Bad key."),
        ("Error code: 401 - {'error': {'message': 'cut off… [9 more", None),
        ("Error code: 401 - {__import__('os').getcwd()}", None),  # never evaluated
        ("Error code: 401 - {'error': {'code': 'x'}}", None),
        ("Error code: 4010 - other", None),
        ("a message of its own", None),
        ("Error code: 401", ""),
    ],
)
def test_server_message(text: str, said: str | None) -> None:
    expected = said if said is not None else text.removeprefix("Error code: 401 - ")
    if text.startswith("Error code: 4010"):
        expected = text
    assert server_message(text, 401) == expected
    line = one_line("AuthenticationError", text, status=401)
    assert line == f"AuthenticationError (HTTP 401): {expected}".removesuffix(": ")


def _raised_from(*chain: BaseException) -> BaseException:
    """The first of ``chain``, raised from the second, raised from the third..."""
    for outer, inner in itertools.pairwise(chain):
        outer.__cause__ = inner
    return chain[0]


def test_a_connection_cause_is_the_first_cause_that_says_something() -> None:
    error = _raised_from(
        connection_error(),
        httpx.ConnectError(""),
        ConnectionRefusedError(111, "Connection refused"),
    )
    assert connection_cause(error) == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_a_silent_read_error_is_explained() -> None:
    # As on asyncio: httpx's error from httpcore's, from anyio's, none of them with a message.
    error = _raised_from(
        connection_error(), httpx.ReadError(""), httpx.ReadError(""), anyio.BrokenResourceError()
    )
    assert connection_cause(error) == (
        "ReadError: the connection was closed or reset while the answer was read"
    )
    assert connection_cause(_raised_from(connection_error(), KeyError())) == "KeyError"


def test_a_connection_cause_masks_keys_and_may_be_absent() -> None:
    register("sk-proj-abcdefghijklmnop0123456789")
    error = _raised_from(
        connection_error(), httpx.ConnectError("proxy refused sk-proj-abcdefghijklmnop0123456789")
    )
    cause = connection_cause(error)
    assert cause is not None
    assert cause.startswith("ConnectError: proxy refused ")
    assert "abcdefghijklmnop0123456789" not in cause
    assert connection_cause(connection_error()) is None
