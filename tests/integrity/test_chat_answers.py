"""Issue 12, row 3 (SPEC §6 answer checks): a chat answer without usable text is never a result.

- empty content, no first choice, a 200 whose body is an ``error`` object: `InvalidResponse`,
  retried like a 5xx; ``chat()`` never returns a completion without choices;
- ``finish_reason: content_filter``, a ``refusal``, tool calls: the answer explains itself, so the
  item fails at once (one request, no retry) with the reason in the message;
- ``finish_reason: length`` with text is text.

Today: ``""`` is accepted as a summary, ``chat()`` returns ``choices=None``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from resilient_llm import BatchResult
from resilient_llm.testing import MockOpenAIServer, chat_reply_text

from ._public import (
    FAST,
    InvalidResponse,
    assert_outcomes,
    async_client,
    sync_client,
)
from ._servers import _choice, _completion, bad_chat_answers, chat_fault

ANSWERS = bad_chat_answers()
RETRIED = sorted(name for name, answer in ANSWERS.items() if answer.retryable)
AT_ONCE = sorted(name for name, answer in ANSWERS.items() if not answer.retryable)
NO_CHOICE = ["no_choices", "choices_null", "error_in_200"]
PROMPT = "Tell me about the weather in Lisbon in spring"
ATTEMPTS = FAST.max_attempts
CHAT = "/v1/chat/completions"


def _check_reason(name: str, error: BaseException) -> None:
    reason = ANSWERS[name].reason
    if reason:
        assert re.search(reason, str(error)), f"{name}: {error}"


# -- complete / summarize --------------------------------------------------------------------------


@pytest.mark.parametrize("name", RETRIED)
def test_complete_retries_an_answer_without_text_sync(name: str, server: MockOpenAIServer) -> None:
    server.script(ANSWERS[name].fault, path=CHAT)
    with sync_client(server.base_url) as client:
        text = client.complete(PROMPT)
    assert text == chat_reply_text(PROMPT)
    assert server.stats.total_requests == 2


@pytest.mark.parametrize("name", RETRIED)
def test_complete_fails_when_no_answer_has_text_sync(name: str) -> None:
    with MockOpenAIServer(fail_rate=1.0, random_faults=[ANSWERS[name].fault]) as server:
        with sync_client(server.base_url) as client, pytest.raises(InvalidResponse) as caught:
            client.complete(PROMPT)
        assert server.stats.total_requests == ATTEMPTS
    _check_reason(name, caught.value)


@pytest.mark.parametrize("name", AT_ONCE)
def test_an_answer_that_explains_itself_fails_at_once_sync(
    name: str, server: MockOpenAIServer
) -> None:
    server.script(ANSWERS[name].fault, path=CHAT)
    with sync_client(server.base_url) as client:
        with pytest.raises(InvalidResponse) as caught:
            client.complete(PROMPT)
        assert server.stats.total_requests == 1, "an answer that explains itself was retried"
        server.script(ANSWERS[name].fault, path=CHAT)
        with pytest.raises(InvalidResponse):
            client.summarize(PROMPT)
        assert server.stats.total_requests == 2
    _check_reason(name, caught.value)
    assert getattr(caught.value, "retryable", None) is False


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(ANSWERS))
async def test_complete_async(name: str, server: MockOpenAIServer, anyio_backend: str) -> None:
    answer = ANSWERS[name]
    server.script(answer.fault, path=CHAT)
    async with async_client(server.base_url) as client:
        if answer.retryable:
            assert await client.complete(PROMPT) == chat_reply_text(PROMPT)
            assert server.stats.total_requests == 2
        else:
            with pytest.raises(InvalidResponse) as caught:
                await client.complete(PROMPT)
            assert server.stats.total_requests == 1
            _check_reason(name, caught.value)


def test_summarize_never_returns_an_empty_summary(server: MockOpenAIServer) -> None:
    server.script(ANSWERS["empty_content"].fault, ANSWERS["null_content"].fault, path=CHAT)
    with sync_client(server.base_url) as client:
        assert client.summarize(PROMPT) == chat_reply_text(PROMPT)
    assert server.stats.total_requests == 3


def test_length_with_text_is_text(server: MockOpenAIServer) -> None:
    """Guard against over-correcting: a cut-off answer still has text (SPEC §6)."""
    cut = chat_fault("length", _completion([_choice({"content": "Lisbon in spring is"}, "length")]))
    server.script(cut, path=CHAT)
    with sync_client(server.base_url) as client:
        assert client.complete(PROMPT) == "Lisbon in spring is"
    assert server.stats.total_requests == 1


# -- chat() --------------------------------------------------------------------------------------


def _assert_real_completion(completion: Any) -> None:
    assert isinstance(completion, ChatCompletion), type(completion)
    assert completion.choices, f"chat() returned a completion without choices: {completion!r}"
    assert completion.choices[0].message.content == chat_reply_text(PROMPT)


@pytest.mark.parametrize("name", NO_CHOICE)
def test_chat_never_returns_a_completion_without_a_choice_sync(
    name: str, server: MockOpenAIServer
) -> None:
    server.script(ANSWERS[name].fault, path=CHAT)
    with sync_client(server.base_url) as client:
        _assert_real_completion(client.chat([{"role": "user", "content": PROMPT}]))
    assert server.stats.total_requests == 2
    with (
        MockOpenAIServer(fail_rate=1.0, random_faults=[ANSWERS[name].fault]) as always,
        sync_client(always.base_url) as client,
        pytest.raises(InvalidResponse),
    ):
        client.chat([{"role": "user", "content": PROMPT}])


@pytest.mark.anyio
@pytest.mark.parametrize("name", NO_CHOICE)
async def test_chat_never_returns_a_completion_without_a_choice_async(
    name: str, server: MockOpenAIServer, anyio_backend: str
) -> None:
    server.script(ANSWERS[name].fault, path=CHAT)
    async with async_client(server.base_url) as client:
        _assert_real_completion(await client.chat([{"role": "user", "content": PROMPT}]))
    assert server.stats.total_requests == 2


# -- summarize_batch -------------------------------------------------------------------------------

TEXTS = [f"Report number {i}: the harvest was good and the river rose." for i in range(40)]


def check_summaries(result: BatchResult[str], server: MockOpenAIServer) -> None:
    ok, _ = assert_outcomes(result, TEXTS, value_of=lambda i: chat_reply_text(TEXTS[i]))
    for failure in result.failures:
        assert failure.error_type == "InvalidResponse", failure
        assert failure.attempts == ATTEMPTS, failure
    assert ok, "nothing succeeded"


def _mixed() -> MockOpenAIServer:
    faults = [ANSWERS[name].fault for name in RETRIED]
    return MockOpenAIServer(fail_rate=0.3, random_faults=faults, seed=3)


def test_summarize_batch_with_answers_without_text_sync() -> None:
    with _mixed() as server:
        with sync_client(server.base_url) as client:
            result = client.summarize_batch(TEXTS, max_concurrency=4)
        assert sum(server.stats.faults_injected.values()) >= 4
        check_summaries(result, server)


@pytest.mark.anyio
async def test_summarize_batch_with_answers_without_text_async(anyio_backend: str) -> None:
    with _mixed() as server:
        async with async_client(server.base_url) as client:
            result = await client.summarize_batch(TEXTS, max_concurrency=4)
        assert sum(server.stats.faults_injected.values()) >= 4
        check_summaries(result, server)


@pytest.mark.parametrize("name", AT_ONCE)
def test_summarize_batch_fails_a_refused_item_at_once(name: str, server: MockOpenAIServer) -> None:
    server.script(ANSWERS[name].fault, path=CHAT)
    with sync_client(server.base_url) as client:
        result = client.summarize_batch(TEXTS[:10], max_concurrency=1)
    assert_outcomes(result, TEXTS[:10], failed=[0], value_of=lambda i: chat_reply_text(TEXTS[i]))
    (failure,) = result.failures
    assert failure.error_type == "InvalidResponse"
    assert failure.attempts == 1
    assert re.search(ANSWERS[name].reason, failure.message), failure.message
    assert server.stats.total_requests == 10, "the refused item was retried"
