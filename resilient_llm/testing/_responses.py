"""``POST /v1/responses``: its body checked, and its answer, streamed or not: one assistant
message with one ``output_text`` part (no I/O)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from ._chat import chat_reply_text, message_tokens
from ._reply import JSON_HEADERS, SSE_HEADERS, Reply
from ._request import ApiRequest, check_model, check_options, invalid, load_object

__all__ = ["parse_responses", "responses_reply"]


def _input_item_text(item: object) -> tuple[str, str] | None:
    """(role, text) of one Responses API input item, or None if it is not one."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        if not isinstance(role, str):
            return None
        if isinstance(content, str):
            return role, content
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict):
                    return None
                if part.get("type") in ("input_text", "output_text", "text"):
                    text = part.get("text")
                    if not isinstance(text, str):
                        return None
                    parts.append(text)
            return role, "\n".join(parts)
        return None
    if kind == "function_call_output" and isinstance(item.get("output"), str):
        return "tool", item["output"]
    # Other item kinds (function calls, reasoning...) carry no text for the answer.
    return ("other", "") if isinstance(kind, str) else None


def parse_responses(req: ApiRequest, body: bytes) -> None:
    payload = load_object(req, body)
    if payload is None:
        return
    raw = payload.get("input")
    items: list[tuple[str, str]] = []
    if isinstance(raw, str):
        items.append(("user", raw))
    elif isinstance(raw, list) and raw:
        for i, item in enumerate(raw):
            parsed = _input_item_text(item)
            if parsed is None:
                req.error = invalid(f"Invalid value for 'input[{i}]'.", f"input[{i}]")
                return
            items.append(parsed)
    else:
        req.error = invalid("Missing required parameter: 'input'.", "input")
        return
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        req.error = invalid("Invalid type for 'instructions': expected a string.", "instructions")
        return
    req.texts = [text for _, text in items]
    req.n_inputs = len(items)
    users = [text for role, text in items if role == "user"]
    req.prompt_text = users[-1] if users else req.texts[-1]
    req.prompt_tokens = message_tokens([*req.texts, instructions or ""], len(items))
    if check_options(req, payload, ("max_output_tokens",)):
        check_model(req)


def responses_reply(req: ApiRequest, number: int) -> Reply:
    """A Responses API answer: one assistant message with one ``output_text`` part."""
    payload = req.payload
    words = chat_reply_text(req.prompt_text).split(" ")
    limit = payload.get("max_output_tokens")
    incomplete = limit is not None and len(words) > limit
    if incomplete:
        words = words[:limit]
    text = " ".join(words)
    created = int(time.time())
    response_id = f"resp_mock{number:012d}"
    item_id = f"msg_mock{number:012d}"
    output_tokens = len(words)
    usage = {
        "input_tokens": req.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": req.prompt_tokens + output_tokens,
    }
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    final_status = "incomplete" if incomplete else "completed"
    item = {
        "id": item_id,
        "type": "message",
        "status": final_status,
        "role": "assistant",
        "content": [part],
    }

    def response(status: str, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "completed_at": created if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete and done else None,
            "instructions": payload.get("instructions"),
            "max_output_tokens": limit,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": payload.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": payload.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage if done else None,
            "metadata": payload.get("metadata") or {},
        }

    if not payload.get("stream"):
        document = response(final_status, [item], done=True)
        return Reply(
            200, JSON_HEADERS, json.dumps(document).encode(), prompt_tokens=req.prompt_tokens
        )

    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = {**item, "status": "in_progress", "content": []}
    empty_part = {**part, "text": ""}
    chunks = [
        event("response.created", response=response("in_progress", [], done=False)),
        event("response.in_progress", response=response("in_progress", [], done=False)),
        event("response.output_item.added", output_index=0, item=started),
        event("response.content_part.added", **where, part=empty_part),
    ]
    for position, word in enumerate(words):
        delta = word if position == 0 else " " + word
        chunks.append(event("response.output_text.delta", **where, delta=delta, logprobs=[]))
    chunks += [
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.content_part.done", **where, part=part),
        event("response.output_item.done", output_index=0, item=item),
        event(f"response.{final_status}", response=response(final_status, [item], done=True)),
    ]
    return Reply(200, SSE_HEADERS, chunks=chunks, prompt_tokens=req.prompt_tokens)
