"""Request lines and shards: what each input becomes in a batch input file, and where it goes.

No network here: planning reads the inputs once, checks each, writes the request lines into
shard files within the Batch API's limits, and fingerprints the inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import InvalidInput
from ._internals import check_messages, prompt_messages
from ._state import JobStore, Shard, to_ranges

__all__ = [
    "EMBEDDINGS",
    "CHAT",
    "Limits",
    "Plan",
    "RequestKind",
    "custom_id",
    "index_of",
    "plan_shards",
]

EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"

_PREVIEW_CHARS = 200


def custom_id(index: int) -> str:
    """The ``custom_id`` of input `index`'s line."""
    return f"i{index}"


def index_of(value: object) -> int | None:
    """The input index a ``custom_id`` names, or ``None`` if it is not one of ours."""
    if isinstance(value, str) and value[:1] == "i" and value[1:].isdigit():
        return int(value[1:])
    return None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-batch limits of the Batch API.

    Attributes:
        max_lines: request lines per input file (OpenAI: 50,000).
        max_bytes: bytes per input file (OpenAI: 200 MB).
        max_inputs: embedding inputs per batch (OpenAI: 50,000).
    """

    max_lines: int = 50_000
    max_bytes: int = 200_000_000
    max_inputs: int = 50_000


@dataclass(frozen=True, slots=True)
class RequestKind:
    """How one input becomes the body of one request line.

    Attributes:
        kind: ``embeddings`` or ``chat``.
        endpoint: the batch endpoint.
        model: the model every line names.
        request: the options that shape every body (stored in the state, compared on resume).
        body: ``body(item) -> dict``; raises ``InvalidInput`` for an input that cannot be sent.
    """

    kind: str
    endpoint: str
    model: str
    request: dict[str, Any]
    body: Callable[[object], dict[str, Any]]


def _text(item: object, name: str = "input") -> str:
    if not isinstance(item, str):
        raise InvalidInput(f"{name} is a {type(item).__name__}, not a str")
    if not item.strip():
        raise InvalidInput(f"{name} is empty or whitespace only; nothing to send")
    return item


def embeddings_kind(model: str, dimensions: int | None, params: Mapping[str, Any]) -> RequestKind:
    """Embedding requests of one input each, answered in base64 (a quarter of the JSON)."""
    fixed: dict[str, Any] = {**params, "model": model, "encoding_format": "base64"}
    if dimensions is not None:
        fixed["dimensions"] = dimensions

    def body(item: object) -> dict[str, Any]:
        return {**fixed, "input": _text(item)}

    request = {"dimensions": dimensions, "params": dict(params)}
    return RequestKind("embeddings", EMBEDDINGS, model, request, body)


def chat_kind(
    model: str,
    params: Mapping[str, Any],
    messages: Callable[[object], Sequence[Mapping[str, Any]]],
    request: Mapping[str, Any],
) -> RequestKind:
    """Chat completion requests, one per input; `messages` turns an input into messages."""

    def body(item: object) -> dict[str, Any]:
        return {**params, "model": model, "messages": list(messages(item))}

    return RequestKind("chat", CHAT, model, {**request, "params": dict(params)}, body)


def prompt_or_messages(system: str | None) -> Callable[[object], Sequence[Mapping[str, Any]]]:
    """A prompt (``str``) with an optional system message, or a list of messages as is."""

    def messages(item: object) -> Sequence[Mapping[str, Any]]:
        if isinstance(item, str):
            return prompt_messages(_text(item, "prompt"), system)
        try:
            return check_messages(item)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(str(exc)) from exc

    return messages


class Fingerprint:
    """sha256 over the inputs, each framed by its kind and length."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def update(self, item: object) -> None:
        if isinstance(item, str):
            data = b"s" + item.encode("utf-8", "surrogatepass")
        else:
            try:
                data = b"j" + json.dumps(item, sort_keys=True).encode()
            except (TypeError, ValueError):
                data = b"o" + type(item).__qualname__.encode()
        self._hash.update(len(data).to_bytes(8, "little"))
        self._hash.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def fingerprint(items: Iterable[object]) -> tuple[str, int]:
    """The fingerprint of `items` and how many there were."""
    hasher = Fingerprint()
    for item in items:
        hasher.update(item)
    return hasher.hexdigest(), hasher.count


def _line(index: int, endpoint: str, body: dict[str, Any]) -> bytes:
    document = {"custom_id": custom_id(index), "method": "POST", "url": endpoint, "body": body}
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: JSON's \u escape carries it
        return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def item_preview(item: object) -> object:
    """What a failure record previews: the head of a text, the item itself otherwise."""
    return item[:_PREVIEW_CHARS] if isinstance(item, str) else item


@dataclass
class Plan:
    """What planning produced: the shards (files written), the rejected inputs, the fingerprint."""

    fingerprint: str
    total: int
    shards: list[Shard] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def plan_shards(
    items: Iterable[object], kind: RequestKind, limits: Limits, store: JobStore
) -> Plan:
    """Read `items` once: check each, write its request line into a shard file within `limits`.

    Holds one line at a time in memory (shard files are written as they fill).
    """
    hasher = Fingerprint()
    plan = Plan(fingerprint="", total=0)
    max_lines = limits.max_lines
    if kind.kind == "embeddings":
        max_lines = min(max_lines, limits.max_inputs)  # one input per line
    writer: Any = None
    stream: Any = None
    current: list[int] = []
    size = 0

    def close() -> None:
        nonlocal writer, stream, current, size
        if writer is None:
            return
        writer.__exit__(None, None, None)
        number = len(plan.shards)
        plan.shards.append(
            Shard(shard=number, round=0, ranges=to_ranges(current), lines=len(current), bytes=size)
        )
        writer = stream = None
        current, size = [], 0

    try:
        for index, item in enumerate(items):
            hasher.update(item)
            try:
                line = _line(index, kind.endpoint, kind.body(item))
                if len(line) > limits.max_bytes:
                    raise InvalidInput(
                        f"its request line has {len(line)} bytes; a batch file takes at most "
                        f"{limits.max_bytes}"
                    )
            except InvalidInput as exc:
                plan.rejected.append(
                    {
                        "index": index,
                        "error_type": type(exc).__name__,
                        "message": str(exc),
                        "item": item_preview(item) if isinstance(item, str) else repr(item)[:80],
                    }
                )
                continue
            if writer is not None and (
                len(current) >= max_lines or size + len(line) > limits.max_bytes
            ):
                close()
            if writer is None:
                writer = store.shard_writer(len(plan.shards))
                stream = writer.__enter__()
            stream.write(line)
            current.append(index)
            size += len(line)
        close()
    except BaseException as exc:
        if writer is not None:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    plan.fingerprint = hasher.hexdigest()
    plan.total = hasher.count
    return plan


def filter_lines(data: bytes, keep: set[int]) -> tuple[bytes, list[int]]:
    """The lines of a shard file whose input index is in `keep`, and their indices in order."""
    lines: list[bytes] = []
    order: list[int] = []
    for line in data.splitlines(keepends=True):
        index = _line_index(line)
        if index is not None and index in keep:
            lines.append(line)
            order.append(index)
    return b"".join(lines), order


def _line_index(line: bytes) -> int | None:
    # Our own lines start with {"custom_id":"i<index>", ...: no need to parse the whole body.
    prefix = b'{"custom_id":"i'
    if line.startswith(prefix):
        end = line.find(b'"', len(prefix))
        digits = line[len(prefix) : end]
        if digits.isdigit():
            return int(digits)
    return index_of(json.loads(line).get("custom_id"))


def line_inputs(data: bytes, wanted: set[int]) -> dict[int, Any]:
    """The input (``body.input``, or ``body.messages``) of the lines of a shard file in `wanted`."""
    found: dict[int, Any] = {}
    for line in data.splitlines():
        index = _line_index(line)
        if index is None or index not in wanted:
            continue
        body = json.loads(line)["body"]
        found[index] = body["input"] if "input" in body else body["messages"]
    return found
