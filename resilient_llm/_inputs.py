"""The checks and shapes of what callers send: texts, messages, summary prompts.

:func:`text_problem` is the one text check (type, blank, lone surrogates) every path uses, so an
input is refused the same way by single calls, batches, ``map`` helpers and the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from ._exceptions import InvalidInput

__all__ = [
    "COMBINE_INSTRUCTIONS",
    "DEFAULT_SUMMARY_INSTRUCTIONS",
    "MAX_EMBEDDING_INPUT_TOKENS",
    "check_messages",
    "check_text",
    "preview_text",
    "prompt_messages",
    "summary_guidance",
    "summary_messages",
    "text_problem",
    "utf8_length",
]

#: Per-input limit of OpenAI's embedding models.
MAX_EMBEDDING_INPUT_TOKENS = 8191

DEFAULT_SUMMARY_INSTRUCTIONS = (
    "Summarize the text below. Keep the facts, names and numbers that matter; leave out filler. "
    "Answer with the summary only."
)

COMBINE_INSTRUCTIONS = (
    "The text below is a series of summaries of consecutive parts of one document. "
    "Combine them into one summary of the whole document."
)


def text_problem(value: object) -> str | None:
    """What makes ``value`` unsendable as a text, or ``None`` when it is fine.

    Not a string, empty, whitespace only, or not encodable as UTF-8 (a lone surrogate).
    """
    if not isinstance(value, str):
        kind = type(value).__name__
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"expected str, got {kind}; decode it first (for example data.decode('utf-8'))"
        return f"expected str, got {kind}"
    if not value:
        return "empty string"
    if value.isspace():
        return f"whitespace-only string ({len(value)} characters)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"cannot be encoded as UTF-8: lone surrogate U+{ord(value[exc.start]):04X} "
                f"at position {exc.start}"
            )
    return None


def check_text(value: object, name: str) -> str:
    """``value`` if it is a sendable text; raise naming ``name`` otherwise.

    Raises:
        TypeError: not a string.
        InvalidInput: empty, whitespace only, or a lone surrogate.
    """
    problem = text_problem(value)
    if problem is None:
        return cast(str, value)
    if not isinstance(value, str):
        raise TypeError(f"{name}: {problem}")
    raise InvalidInput(f"{name}: {problem}")


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8: an upper bound of its token count for byte-level BPE."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def check_messages(messages: object) -> list[Mapping[str, Any]]:
    """Validate chat ``messages``: a list of dicts, each with a string ``role``."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of dicts like [{'role': 'user', 'content': 'Hi'}], "
            f"not {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages must not be empty")
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(
                f"messages[{position}] must be a dict with 'role' and 'content', "
                f"not {type(message).__name__}"
            )
        if not isinstance(message.get("role"), str):
            raise TypeError(f"messages[{position}] has no string 'role'")
        content = message.get("content")
        if isinstance(content, str) and text_problem(content) is not None and content.strip():
            raise InvalidInput(f"messages[{position}].content: {text_problem(content)}")
    return list(messages)


def prompt_messages(prompt: object, system: object) -> list[dict[str, str]]:
    """Messages for ``complete(prompt, system=...)``."""
    text = check_text(prompt, "prompt")
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": check_text(system, "system")})
    messages.append({"role": "user", "content": text})
    return messages


def summary_guidance(instructions: object, max_words: object, *, combine: bool = False) -> str:
    """The system message of a summary: instructions, and the word limit if any."""
    guidance = DEFAULT_SUMMARY_INSTRUCTIONS
    if instructions is not None:
        guidance = check_text(instructions, "instructions")
    if combine:
        guidance = COMBINE_INSTRUCTIONS + (f"\n{instructions}" if instructions else "")
    if max_words is not None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ValueError(f"max_words must be a positive int, got {max_words!r}")
        guidance = f"{guidance}\nUse at most {max_words} words."
    return guidance


def summary_messages(
    text: object, instructions: object, max_words: object, *, combine: bool = False
) -> list[dict[str, str]]:
    """Messages for a summary: instructions as the system message, the text as the user's."""
    body = check_text(text, "text")
    return [
        {"role": "system", "content": summary_guidance(instructions, max_words, combine=combine)},
        {"role": "user", "content": body},
    ]


def preview_text(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
