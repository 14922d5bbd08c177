"""``/v1/files``: uploads, listing, reading and deleting files, and the result files batches
write (no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

from .._reply import Reply
from .._request import invalid
from .records import FILE_PURPOSES, File
from .replies import bad_method, json_reply, list_page, not_found, unsupported
from .state import State

__all__ = ["files_route", "store_result"]

_OCTET_HEADERS = b"content-type: application/octet-stream\r\n"


def files_route(
    state: State,
    method: str,
    rest: list[str],
    params: Mapping[str, str],
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> Reply:
    """Answer ``/v1/files`` and below; `rest` is the path after ``/v1/files``, split."""
    if not rest:
        if method == "POST":
            return _upload(state, headers, body)
        if method == "GET":
            return _list_files(state, params)
    elif len(rest) == 1:
        file = state.files.get(unquote(rest[0]))
        if method in ("GET", "DELETE") and file is None:
            return not_found("File", unquote(rest[0]))
        if method == "GET" and file is not None:
            return json_reply(file.view())
        if method == "DELETE" and file is not None:
            del state.files[file.id]
            return json_reply({"id": file.id, "object": "file", "deleted": True})
    elif len(rest) == 2 and rest[1] == "content" and method == "GET":
        file = state.files.get(unquote(rest[0]))
        if file is None:
            return not_found("File", unquote(rest[0]))
        return Reply(200, _OCTET_HEADERS, file.data)
    return bad_method(method, "/v1/files/" + "/".join(rest))


def store_result(state: State, name: str, lines: list[bytes]) -> str | None:
    """Store a batch's output or error lines as a file; return its id (None: no lines).

    The next scripted download fault, if any, is scripted on the new file's content.
    """
    if not lines:
        return None
    data = b"".join(line + b"\n" for line in lines)
    file = _add_file(state, name, "batch_output", data)
    if state.download_faults:
        state.server.script(state.download_faults.popleft(), path=f"/v1/files/{file.id}/content")
    return file.id


def _add_file(state: State, filename: str, purpose: str, data: bytes) -> File:
    file = File(
        id=f"file-{uuid.uuid4().hex[:22]}",
        filename=filename,
        purpose=purpose,
        data=data,
        created_at=int(state.now),
    )
    state.files[file.id] = file
    return file


def _upload(state: State, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Reply:
    content_type = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")
    fields = _multipart(content_type, body)
    if fields is None:
        return invalid("Expected a multipart/form-data body with 'file' and 'purpose'.")
    purpose = fields.get("purpose")
    upload = fields.get("file")
    if purpose is None:
        return invalid("Missing required parameter: 'purpose'.", "purpose")
    purpose_text = purpose[1].decode("utf-8", "replace")
    if purpose_text not in FILE_PURPOSES:
        return unsupported("purpose", purpose_text, FILE_PURPOSES)
    if upload is None or upload[0] is None:
        return invalid("Missing required parameter: 'file'.", "file")
    filename, data = upload[0], upload[1]
    if purpose_text == "batch":
        if not filename.endswith(".jsonl"):
            return invalid(
                f"Invalid file format for Batch API. Must be .jsonl, got {filename!r}.", "file"
            )
        if len(data) > state.settings.max_file_bytes:
            return invalid(
                f"File is too large for Batch API: {len(data)} bytes, at most "
                f"{state.settings.max_file_bytes}.",
                "file",
            )
    return json_reply(_add_file(state, filename, purpose_text, data).view())


def _list_files(state: State, params: Mapping[str, str]) -> Reply:
    files = sorted(state.files.values(), key=lambda f: f.created_at)
    if params.get("order", "desc") == "desc":
        files.reverse()
    if "purpose" in params:
        files = [f for f in files if f.purpose == params["purpose"]]
    return list_page([f.view() for f in files], params, 10_000, 10_000)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """Parse a multipart/form-data body: field name -> (filename or None, bytes)."""
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = None
    for param in rest.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            return None
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = ""
        for header in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = header.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        name: str | None = None
        filename: str | None = None
        for param in disposition.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            value = value.strip('"')
            if key == "name":
                name = value
            elif key == "filename":
                filename = value
        if name is not None:
            fields[name] = (filename, content)
    return fields
