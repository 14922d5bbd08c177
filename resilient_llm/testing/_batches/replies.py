"""The HTTP answers the Batch API's routes share: JSON documents, errors and list pages (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._reply import JSON_HEADERS, Reply, error_reply
from .._request import invalid

__all__ = ["bad_method", "json_reply", "list_page", "not_found", "unsupported"]


def json_reply(document: Mapping[str, Any]) -> Reply:
    return Reply(200, JSON_HEADERS, json.dumps(document).encode())


def not_found(kind: str, object_id: str) -> Reply:
    message = (
        f"No such File object: {object_id}"
        if kind == "File"
        else f"No batch found with id '{object_id}'."
    )
    return error_reply(404, message, "invalid_request_error", None, "id")


def unsupported(name: str, value: str, supported: tuple[str, ...]) -> Reply:
    """The 400 for a parameter whose value is not one of those the API supports."""
    return invalid(
        f"Invalid value for '{name}': {value!r}. Supported values are: "
        + ", ".join(repr(s) for s in supported)
        + ".",
        name,
    )


def bad_method(method: str, path: str) -> Reply:
    return error_reply(405, f"Invalid method for URL ({method} {path})")


def list_page(
    items: list[dict[str, Any]], params: Mapping[str, str], default: int, maximum: int
) -> Reply:
    """One page of a list (``limit`` items after the id ``after``), as the API pages lists.

    Args:
        items: The objects, in the list's order.
        params: The query: ``limit`` (`default` if absent, at most `maximum`) and ``after``.
        default: Items on a page when the query does not say.
        maximum: The largest ``limit`` accepted.
    """
    limit = _limit(params.get("limit"), default, maximum)
    if limit is None:
        return invalid(f"Invalid 'limit': must be between 1 and {maximum}.", "limit")
    after = params.get("after")
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    chosen = items[start : start + limit]
    return json_reply(
        {
            "object": "list",
            "data": chosen,
            "first_id": chosen[0]["id"] if chosen else None,
            "last_id": chosen[-1]["id"] if chosen else None,
            "has_more": start + limit < len(items),
        }
    )


def _limit(raw: str | None, default: int, maximum: int) -> int | None:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= maximum else None
