"""The lines of a batch: its input file read and checked as the Batch API checks it, and each
line run through the server's own endpoint handlers (no I/O)."""

from __future__ import annotations

import json
from typing import Any

from .._api import parse_request, respond
from .._faults import Fault
from .._reply import error_reply
from .._request import poison_refusal
from .records import Batch, File, Line, Settings
from .state import State

__all__ = ["abandon_unfinished", "read_input", "run_lines"]


def read_input(
    batch: Batch, file: File | None, s: Settings
) -> tuple[list[dict[str, Any]], list[Line], str | None]:
    """Read `batch`'s input `file` (None: it was deleted) as the Batch API validates one.

    Returns:
        The errors (``errors.data`` entries, at most ten, then reading stops), the lines and
        the model every line names.
    """

    def error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
        return {"code": code, "message": message, "param": None, "line": line}

    if file is None:
        return [error("file_not_found", "The input file was deleted.")], [], None
    errors: list[dict[str, Any]] = []
    lines: list[Line] = []
    seen: set[str] = set()
    model: str | None = None
    inputs = 0
    for number, raw in enumerate(file.data.splitlines(), 1):
        if not raw.strip():
            continue
        if len(errors) >= 10:
            break
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            errors.append(
                error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            )
            continue
        custom_id, method, url, body = (
            item.get("custom_id"),
            item.get("method"),
            item.get("url"),
            item.get("body"),
        )
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(error("missing_required_parameter", "Missing 'custom_id'.", number))
            continue
        if custom_id in seen:
            errors.append(
                error(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' is used more than once in this file.",
                    number,
                )
            )
            continue
        seen.add(custom_id)
        if method != "POST":
            errors.append(error("invalid_method", f"Invalid method {method!r}: only POST.", number))
            continue
        if url != batch.endpoint:
            errors.append(
                error(
                    "url_mismatch",
                    f"The url {url!r} does not match the batch endpoint {batch.endpoint!r}.",
                    number,
                )
            )
            continue
        if not isinstance(body, dict):
            errors.append(error("missing_required_parameter", "Missing 'body'.", number))
            continue
        line_model = body.get("model")
        if model is None and isinstance(line_model, str):
            model = line_model
        elif line_model != model:
            errors.append(
                error(
                    "model_mismatch",
                    f"The model {line_model!r} differs from the batch's model {model!r}.",
                    number,
                )
            )
            continue
        encoded = json.dumps(body).encode()
        parsed = parse_request("POST", url, encoded)
        count = max(1, parsed.n_inputs) if url == "/v1/embeddings" else 0
        inputs += count
        lines.append(Line(number, custom_id, parsed, parsed.prompt_tokens, count))
    if not errors and not lines:
        errors.append(error("empty_file", "The input file is empty."))
    if not errors and len(lines) > s.max_lines:
        errors.append(
            error(
                "too_many_tasks",
                f"The input file has {len(lines)} requests; a batch takes at most {s.max_lines}.",
            )
        )
    if not errors and inputs > s.max_embedding_inputs:
        errors.append(
            error(
                "too_many_tasks",
                f"The batch has {inputs} embedding inputs; a batch takes at most "
                f"{s.max_embedding_inputs}.",
            )
        )
    return errors, lines, model


def run_lines(state: State, batch: Batch, target: int) -> None:
    """Run `batch`'s next lines until `target` of them are done, recording each answer."""
    while batch.done < target:
        line = batch.lines[batch.done]
        batch.done += 1
        status, body, prompt, completion = _run_line(state, line)
        number = next(state.numbers)
        record = (
            b'{"id":"batch_req_%024x","custom_id":%s,"response":{"status_code":%d,'
            b'"request_id":"req_%024x","body":%s},"error":null}'
            % (number, json.dumps(line.custom_id).encode(), status, number, body)
        )
        if 200 <= status < 300:
            batch.output.append(record)
            batch.completed_lines += 1
            batch.input_tokens += prompt
            batch.output_tokens += completion
        else:
            batch.errors_out.append(record)
            batch.failed_lines += 1


def _run_line(state: State, line: Line) -> tuple[int, bytes, int, int]:
    """Run one line through the server's handlers: (status, body, prompt, completion)."""
    fault = None
    queue = state.line_faults.get(line.custom_id)
    if queue:
        fault = queue.popleft()
    if fault is not None and fault[0] == "status":
        return fault[1], Fault.status(fault[1]).body, 0, 0
    api = line.request
    if api.error is not None:
        return api.error.status, api.error.body, 0, 0
    refusal = poison_refusal(api, state.poison)
    if refusal is not None:
        return 400, refusal.body, 0, 0
    if api.payload.get("stream"):
        reply = error_reply(400, "Streaming is not supported in the Batch API.", param="stream")
        return 400, reply.body, 0, 0
    reply = respond(api, next(state.numbers))
    if api.endpoint == "embeddings" and fault is None:
        return reply.status, reply.body, reply.prompt_tokens, 0
    document = json.loads(reply.body)
    completion = 0
    if api.endpoint == "chat":
        completion = int(document["usage"]["completion_tokens"])
    if fault is not None:  # corrupt: a 200 that must not be taken as data
        if api.endpoint == "embeddings":
            for entry in document["data"]:
                entry["embedding"] = []
        else:
            for choice in document["choices"]:
                choice["message"]["content"] = ""
        return 200, json.dumps(document).encode(), reply.prompt_tokens, completion
    return reply.status, reply.body, reply.prompt_tokens, completion


def abandon_unfinished(state: State, batch: Batch, status: str) -> None:
    """Fail the lines an ``expired`` or ``cancelled`` batch did not run, as the API does."""
    code, message = (
        (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        )
        if status == "expired"
        else ("batch_cancelled", "This request was not executed: the batch was cancelled.")
    )
    for line in batch.lines[batch.done :]:
        batch.errors_out.append(
            b'{"id":"batch_req_%024x","custom_id":%s,"response":null,"error":%s}'
            % (
                next(state.numbers),
                json.dumps(line.custom_id).encode(),
                json.dumps({"code": code, "message": message}).encode(),
            )
        )
        batch.failed_lines += 1
    batch.done = len(batch.lines)
