"""Counters a reader can check by eye, and real SDK errors, for the pure core's tests."""

from __future__ import annotations

from collections.abc import Sequence

import openai

from tests.sdk_objects import status_error


class WordCounter:
    """One token per whitespace-separated word: counts a reader can check by eye."""

    name = "words"
    exact = True

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        words = text.split()
        if len(words) <= max_tokens:
            return text
        return " ".join(words[:max_tokens])


class CharCounter:
    """One token per non-whitespace character (so any word can be over a limit)."""

    name = "chars"
    exact = True

    def count(self, text: str) -> int:
        return sum(1 for char in text if not char.isspace())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(text) for text in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        seen = 0
        for position, char in enumerate(text):
            if not char.isspace():
                seen += 1
                if seen > max_tokens:
                    return text[:position]
        return text


WORDS = WordCounter()


def api_error(
    cls: type[openai.APIStatusError],
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = "invalid_request_error",
    request_id: str = "req_abc",
) -> openai.APIStatusError:
    """A real openai status error around a real HTTP response (see tests/sdk_objects.py)."""
    body = {"message": message, "code": code, "param": param, "type": type_}
    return status_error(status, body={"error": body}, headers={"x-request-id": request_id}, cls=cls)


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a caught exception has."""
    try:
        raise exc
    except BaseException as caught:
        return caught


class Obj:
    """A stand-in error that is not an openai exception."""

    def __init__(self, status_code: object = None, message: str = "m", **attrs: object) -> None:
        self.status_code = status_code
        self.message = message
        for key, value in attrs.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message
