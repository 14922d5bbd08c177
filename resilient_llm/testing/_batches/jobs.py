"""``/v1/batches``: creating, listing, reading and cancelling batches (no I/O)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from urllib.parse import unquote

from .._reply import Reply
from .._request import invalid
from .lifecycle import tick
from .records import API_ENDPOINTS, RUNNABLE_ENDPOINTS, Batch
from .replies import bad_method, json_reply, list_page, not_found, unsupported
from .state import State

__all__ = ["batches_route"]


def batches_route(
    state: State, method: str, rest: list[str], params: Mapping[str, str], body: bytes
) -> Reply:
    """Answer ``/v1/batches`` and below; `rest` is the path after ``/v1/batches``, split.

    Every batch is brought up to the clock first, and a look at one batch moves the clock by
    ``advance_per_poll``.
    """
    tick(state)
    if not rest:
        if method == "POST":
            return _create(state, body)
        if method == "GET":
            return _list_batches(state, params)
    else:
        batch = state.batches.get(unquote(rest[0]))
        if len(rest) == 1 and method == "GET":
            if batch is None:
                return not_found("batch", unquote(rest[0]))
            if state.settings.advance_per_poll:
                state.offset += state.settings.advance_per_poll
                tick(state)
            return json_reply(batch.view())
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            if batch is None:
                return not_found("batch", unquote(rest[0]))
            return _cancel(state, batch)
    return bad_method(method, "/v1/batches/" + "/".join(rest))


def _create(state: State, body: bytes) -> Reply:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return invalid("We could not parse the JSON body of your request.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(payload.get(name), str):
            return invalid(f"Missing required parameter: '{name}'.", name)
    endpoint = payload["endpoint"]
    if endpoint not in API_ENDPOINTS:
        return unsupported("endpoint", endpoint, API_ENDPOINTS)
    if endpoint not in RUNNABLE_ENDPOINTS:
        return invalid(f"The mock server cannot run batches for {endpoint}.", "endpoint")
    if payload["completion_window"] != "24h":
        return invalid(
            "Invalid value for 'completion_window': only '24h' is supported.",
            "completion_window",
        )
    metadata = payload.get("metadata")
    problem = _check_metadata(metadata)
    if problem is not None:
        return invalid(problem, "metadata")
    file = state.files.get(payload["input_file_id"])
    if file is None:
        return invalid(
            f"Invalid 'input_file_id': '{payload['input_file_id']}'. File not found.",
            "input_file_id",
        )
    if file.purpose != "batch":
        return invalid(
            f"Invalid 'input_file_id': the file has purpose {file.purpose!r}, not 'batch'.",
            "input_file_id",
        )
    batch = Batch(
        id=f"batch_{uuid.uuid4().hex[:24]}",
        endpoint=endpoint,
        input_file_id=file.id,
        completion_window="24h",
        metadata=dict(metadata) if metadata else None,
        created_at=int(state.now),
        sequence=next(state.sequence),
        fault=state.batch_faults.popleft() if state.batch_faults else None,
    )
    state.batches[batch.id] = batch
    return json_reply(batch.view())


def _list_batches(state: State, params: Mapping[str, str]) -> Reply:
    newest_first = reversed(state.oldest_first())
    return list_page([b.view() for b in newest_first], params, 20, 100)


def _cancel(state: State, batch: Batch) -> Reply:
    if batch.status in ("validating", "in_progress", "finalizing"):
        batch.status = "cancelling"
        batch.cancelling_at = int(state.now)
        tick(state)
    elif batch.status != "cancelling":
        return invalid(f"Cannot cancel a batch with status '{batch.status}'.")
    return json_reply(batch.view())


def _check_metadata(metadata: object) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid 'metadata': expected an object of string values."
    if len(metadata) > 16:
        return f"Invalid 'metadata': at most 16 keys, got {len(metadata)}."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': key {key[:20]!r}... is longer than 64 characters."
        if not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata': the value of {key!r} must be a string of <= 512 chars."
    return None
