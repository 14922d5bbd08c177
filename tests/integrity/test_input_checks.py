"""Issue 12, row 12 (SPEC §6 bad input): one check for texts on every path, the user's own
exception from a failing iterable, and a clear error for an impossible rate.

- lone surrogates (text that cannot be encoded as UTF-8) are `InvalidInput` in ``embed``,
  ``complete``, ``summarize`` and the batch forms (there: that item only), and never sent;
- a generator that raises half-way: the batch raises the user's own exception, unchanged, in
  sync and async code (not wrapped in an ``ExceptionGroup``);
- ``requests_per_minute=1e-9``: a `ValueError` naming the option, before any request.

Today single ``embed`` / ``complete`` / ``summarize_batch`` raise a raw ``UnicodeEncodeError``;
async batches raise an ``ExceptionGroup``; ``requests_per_minute=1e-9`` raises
``OverflowError: timestamp out of range``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilient_llm import InvalidInput
from resilient_llm.testing import MockOpenAIServer, chat_reply_text

from ._public import DIMS, assert_outcomes, async_client, sent_texts, sync_client, vector_of

SURROGATES = [
    pytest.param("before \ud800 after", id="high"),
    pytest.param("\udfff", id="low-alone"),
    pytest.param("pair reversed \udc00\ud800", id="reversed-pair"),
]

UNENCODABLE = r"(?i)surrogate|utf-8|encod"
SINGLE: dict[str, Callable[[Any, str], Any]] = {
    "embed(text)": lambda c, t: c.embed(t, dimensions=DIMS),
    "embed([ok, text])": lambda c, t: c.embed(["fine", t], dimensions=DIMS),
    "complete": lambda c, t: c.complete(t),
    "summarize": lambda c, t: c.summarize(t),
}


@pytest.mark.parametrize("text", SURROGATES)
@pytest.mark.parametrize("call", sorted(SINGLE))
def test_lone_surrogates_in_single_calls_sync(
    call: str, text: str, server: MockOpenAIServer
) -> None:
    with sync_client(server.base_url) as client, pytest.raises(InvalidInput, match=UNENCODABLE):
        SINGLE[call](client, text)
    assert server.stats.total_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize("call", sorted(SINGLE))
async def test_lone_surrogates_in_single_calls_async(
    call: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    async with async_client(server.base_url) as client:
        with pytest.raises(InvalidInput, match=UNENCODABLE):
            await SINGLE[call](client, "before \ud800 after")
    assert server.stats.total_requests == 0


BATCH = ["first fine text", "bad \ud800 text", "second fine text", "\udfff", "third fine text"]
BAD_AT = (1, 3)


def _check_batch(result: Any, server: MockOpenAIServer, *, embeddings: bool) -> None:
    value_of = vector_of(BATCH) if embeddings else (lambda i: chat_reply_text(BATCH[i]))
    assert_outcomes(result, BATCH, failed=BAD_AT, value_of=value_of)
    for failure in result.failures:
        assert failure.error_type == "InvalidInput", failure
        assert failure.attempts == 0, failure
    path = "/v1/embeddings" if embeddings else "/v1/chat/completions"
    sent = sent_texts(server, path)
    assert not any(BATCH[i] in sent for i in BAD_AT), "a bad text was sent"


def test_lone_surrogates_in_batches_sync(recording: MockOpenAIServer) -> None:
    with sync_client(recording.base_url) as client:
        _check_batch(
            client.embed_batch(BATCH, batch_size=2, dimensions=DIMS), recording, embeddings=True
        )
        _check_batch(client.summarize_batch(BATCH), recording, embeddings=False)


@pytest.mark.anyio
async def test_lone_surrogates_in_batches_async(
    recording: MockOpenAIServer, anyio_backend: str
) -> None:
    async with async_client(recording.base_url) as client:
        result = await client.embed_batch(BATCH, batch_size=2, dimensions=DIMS)
        _check_batch(result, recording, embeddings=True)
        _check_batch(await client.summarize_batch(BATCH), recording, embeddings=False)


# -- an iterable that fails half-way --------------------------------------------------------------


class SourceBroke(Exception):
    """The user's own error, raised by their generator."""


def failing_source(error: SourceBroke, good: int = 40) -> Iterator[str]:
    for i in range(good):
        yield f"streamed text {i}"
    raise error


def _sync_forms(client: Any) -> dict[str, Callable[[Iterator[str]], Any]]:
    def drain(texts: Iterator[str]) -> None:
        with client.iter_embed_batch(texts, batch_size=4) as stream:
            for _ in stream:
                pass

    return {
        "embed_batch": lambda t: client.embed_batch(t, batch_size=4),
        "summarize_batch": lambda t: client.summarize_batch(t),
        "map": lambda t: client.map(len, t),
        "iter_embed_batch": drain,
    }


FORM_NAMES = ["embed_batch", "summarize_batch", "map", "iter_embed_batch"]


@pytest.mark.parametrize("form", FORM_NAMES)
def test_the_users_exception_from_a_failing_iterable_sync(
    form: str, server: MockOpenAIServer
) -> None:
    error = SourceBroke("the source broke after 40 texts")
    with (
        sync_client(server.base_url) as client,
        pytest.raises(BaseException) as caught,  # noqa: PT011 - the exact object is checked
    ):
        _sync_forms(client)[form](failing_source(error))
    assert type(caught.value) is SourceBroke, repr(caught.value)
    assert caught.value is error


async def _length(text: str) -> int:
    return len(text)


def _async_forms(client: Any) -> dict[str, Callable[[Iterator[str]], Any]]:
    async def drain(texts: Iterator[str]) -> None:
        async with client.iter_embed_batch(texts, batch_size=4) as stream:
            async for _ in stream:
                pass

    return {
        "embed_batch": lambda t: client.embed_batch(t, batch_size=4),
        "summarize_batch": lambda t: client.summarize_batch(t),
        "map": lambda t: client.map(_length, t),
        "iter_embed_batch": drain,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("form", FORM_NAMES)
async def test_the_users_exception_from_a_failing_iterable_async(
    form: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    error = SourceBroke("the source broke after 40 texts")
    async with async_client(server.base_url) as client:
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - the exact object is checked
            await _async_forms(client)[form](failing_source(error))
    assert type(caught.value) is SourceBroke, repr(caught.value)
    assert caught.value is error


# -- an impossible rate -------------------------------------------------------------------------

RATES = [
    pytest.param("requests_per_minute", id="requests_per_minute"),
    pytest.param("tokens_per_minute", id="tokens_per_minute"),
]


@pytest.mark.parametrize("option", RATES)
@pytest.mark.parametrize("form", ["embed_batch", "summarize_batch"])
def test_a_vanishing_rate_is_refused_before_any_request_sync(
    option: str, form: str, server: MockOpenAIServer
) -> None:
    with sync_client(server.base_url) as client, pytest.raises(ValueError, match=option):
        getattr(client, form)(["a", "b"], **{option: 1e-9})
    assert server.stats.total_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize("option", RATES)
async def test_a_vanishing_rate_is_refused_before_any_request_async(
    option: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    async with async_client(server.base_url) as client:
        with pytest.raises(ValueError, match=option):
            await client.embed_batch(["a", "b"], **{option: 1e-9})
    assert server.stats.total_requests == 0
