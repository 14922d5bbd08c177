"""``POST /v1/chat/completions``: its body checked, and its answer, streamed or not, with the
integrity defects `Fault.chat` asks for (no I/O)."""

from __future__ import annotations

import json
import time
from typing import Any

from ._defects import REFUSAL_TEXT, TOOL_NAME, tool_arguments
from ._reply import JSON_HEADERS, SSE_HEADERS, Reply
from ._request import ApiRequest, check_model, check_options, invalid, load_object

__all__ = ["SUMMARY_WORDS", "chat_reply", "chat_reply_text", "message_tokens", "parse_chat"]

SUMMARY_WORDS = 12


def _message_text(content: object) -> str | None:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                return None
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    return None
                parts.append(text)
        return "\n".join(parts)
    return None


def parse_chat(req: ApiRequest, body: bytes) -> None:
    payload = load_object(req, body)
    if payload is None:
        return
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        req.error = invalid("'messages' must be a non-empty array of messages.", "messages")
        return
    for i, message in enumerate(messages):
        text = _message_text(message.get("content")) if isinstance(message, dict) else None
        if text is None or not isinstance(message.get("role"), str):
            req.error = invalid(f"Invalid value for 'messages[{i}]'.", f"messages[{i}]")
            return
        req.texts.append(text)
    req.n_inputs = len(messages)
    req.prompt_tokens = message_tokens(req.texts, len(messages))
    if not check_options(req, payload, ("max_tokens", "max_completion_tokens", "n")):
        return
    if payload.get("stream_options") is not None and not payload.get("stream"):
        req.error = invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
        return
    check_model(req)


def message_tokens(texts: list[str], messages: int) -> int:
    """The prompt tokens of `messages` messages holding `texts`.

    Chat formatting costs a few tokens per message, as OpenAI bills it.
    """
    return sum(len(t) // 4 for t in texts) + 3 * messages + 3


def chat_reply_text(text: str) -> str:
    """The completion the server writes for a last user message `text`.

    Args:
        text: The last user message.

    Returns:
        ``"Summary: "`` and the first twelve words of `text`, ``...`` if there were more.
    """
    words = text.split()
    if not words:
        return "Summary: (empty)"
    more = "..." if len(words) > SUMMARY_WORDS else ""
    return "Summary: " + " ".join(words[:SUMMARY_WORDS]) + more


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_reply(req: ApiRequest, number: int, defect: str = "") -> Reply:
    payload = req.payload
    messages = payload["messages"]
    last = next(
        (req.texts[i] for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"),
        req.texts[-1],
    )
    words = chat_reply_text(last).split(" ")
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    finish = "stop"
    if limit is not None and len(words) > limit:
        words = words[:limit]
        finish = "length"
    n = payload.get("n") or 1
    # What the message holds: text, a refusal or a function call, per the defect asked for.
    content: str | None = " ".join(words)
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    if defect == "empty":
        content, finish = "", "stop"
    elif defect == "content_filter":
        content, finish = None, "content_filter"
    elif defect == "refusal":
        content, refusal, finish = None, REFUSAL_TEXT, "stop"
    elif defect == "tool_calls":
        content, finish = None, "tool_calls"
        tool_calls = [
            {
                "id": f"call_mock{number:012d}",
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": tool_arguments(last)},
            }
        ]
    completion = len((content or refusal or "").split()) * n
    base = {
        "id": f"chatcmpl-mock{number:012d}",
        "created": int(time.time()),
        "model": req.model,
        "service_tier": "default",
        "system_fingerprint": "fp_resilient_llm",
    }
    choices_key = defect != "missing_choices"
    no_choices = defect in ("no_choices", "missing_choices")
    if not payload.get("stream"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": refusal,
            "annotations": [],
        }
        if tool_calls is not None:
            message["tool_calls"] = tool_calls
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]
        document: dict[str, Any] = {"object": "chat.completion", **base}
        if choices_key:
            document["choices"] = [] if no_choices else choices
        document["usage"] = _usage(req.prompt_tokens, completion)
        return Reply(
            200, JSON_HEADERS, json.dumps(document).encode(), prompt_tokens=req.prompt_tokens
        )

    options = payload.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    head = {"object": "chat.completion.chunk", **base}

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {**head}
        if choices_key:
            chunk["choices"] = [] if no_choices else choices
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def choice(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def deltas(delta: dict[str, Any]) -> bytes:
        return event([choice(i, delta) for i in range(n)])

    first = {"role": "assistant", "content": "" if content is not None else None, "refusal": None}
    chunks = [deltas(first)]
    if content:
        for position, word in enumerate(words):
            chunks.append(deltas({"content": word if position == 0 else " " + word}))
    elif refusal is not None:
        for position, word in enumerate(refusal.split(" ")):
            chunks.append(deltas({"refusal": word if position == 0 else " " + word}))
    elif tool_calls is not None:
        call = tool_calls[0]
        opening = {**call, "function": {"name": TOOL_NAME, "arguments": ""}}
        chunks.append(deltas({"tool_calls": [{"index": 0, **opening}]}))
        arguments = call["function"]["arguments"]
        for cut in range(0, len(arguments), 8):
            piece = {"index": 0, "function": {"arguments": arguments[cut : cut + 8]}}
            chunks.append(deltas({"tool_calls": [piece]}))
    chunks.append(event([choice(i, {}, finish) for i in range(n)]))
    if include_usage:
        chunks.append(event([], _usage(req.prompt_tokens, completion)))
    chunks.append(b"data: [DONE]\n\n")
    return Reply(200, SSE_HEADERS, chunks=chunks, prompt_tokens=req.prompt_tokens)
