"""Request lines and shards: what each input becomes in a batch input file, and where it goes.

No network here: planning reads the inputs once, checks each, writes the request lines into
shard files within the Batch API's limits, and fingerprints the inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .._exceptions import InvalidInput
from ._internals import check_messages, preview, prompt_messages
from ._state import JobStore, Shard, to_ranges

__all__ = [
    "EMBEDDINGS",
    "CHAT",
    "Limits",
    "Plan",
    "RequestKind",
    "custom_id",
    "filter_lines",
    "index_of",
    "line_inputs",
    "line_ranges",
    "plan_shards",
]

EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"

_PREVIEW_CHARS = 200


def custom_id(first: int, count: int = 1) -> str:
    """The ``custom_id`` of the line holding inputs ``first .. first + count - 1``."""
    return f"i{first}" if count == 1 else f"i{first}+{count}"


def index_of(value: object) -> tuple[int, int] | None:
    """``(first, count)`` of the inputs a ``custom_id`` names, or ``None`` if not one of ours."""
    if not isinstance(value, str) or value[:1] != "i":
        return None
    first, _, count = value[1:].partition("+")
    if not first.isdigit() or not (count.isdigit() or count == ""):
        return None
    number = int(count) if count else 1
    return (int(first), number) if number >= 1 else None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-batch limits of the Batch API, and how many embedding inputs share a line.

    Attributes:
        max_lines: request lines per input file (OpenAI: 50,000).
        max_bytes: bytes per input file (OpenAI: 200 MB).
        max_inputs: embedding inputs per batch (OpenAI: 50,000).
        inputs_per_line: embedding inputs per request line (1 to 2048).
    """

    max_lines: int = 50_000
    max_bytes: int = 200_000_000
    max_inputs: int = 50_000
    inputs_per_line: int = 1


#: A line with several inputs stays under the endpoint's 300,000 tokens per request: it holds
#: at most this many bytes of text (a token is at least one byte).
MAX_LINE_TEXT_BYTES = 300_000


@dataclass(frozen=True, slots=True)
class RequestKind:
    """How inputs become the bodies of request lines.

    Attributes:
        kind: ``embeddings`` or ``chat``.
        endpoint: the batch endpoint.
        model: the model every line names.
        request: the options that shape every body (stored in the state, compared on resume).
        check: ``check(item) -> payload``; raises ``InvalidInput`` for an input that cannot be
            sent. The payload is what a line carries for the input (a text, messages).
        body: ``body(payloads) -> dict``: the body of one line.
        shares_lines: inputs may share a line (embeddings).
    """

    kind: str
    endpoint: str
    model: str
    request: dict[str, Any]
    check: Callable[[object], Any]
    body: Callable[[list[Any]], dict[str, Any]]
    shares_lines: bool = False


def _text(item: object, name: str = "input") -> str:
    if not isinstance(item, str):
        raise InvalidInput(f"{name} is a {type(item).__name__}, not a str")
    if not item.strip():
        raise InvalidInput(f"{name} is empty or whitespace only; nothing to send")
    return item


def embeddings_kind(model: str, dimensions: int | None, params: Mapping[str, Any]) -> RequestKind:
    """Embedding requests, answered in base64 (a quarter of the JSON)."""
    fixed: dict[str, Any] = {**params, "model": model, "encoding_format": "base64"}
    if dimensions is not None:
        fixed["dimensions"] = dimensions

    def body(texts: list[Any]) -> dict[str, Any]:
        return {**fixed, "input": texts[0] if len(texts) == 1 else texts}

    request = {"dimensions": dimensions, "params": dict(params)}
    return RequestKind("embeddings", EMBEDDINGS, model, request, _text, body, shares_lines=True)


def chat_kind(
    model: str,
    params: Mapping[str, Any],
    messages: Callable[[object], Sequence[Mapping[str, Any]]],
    request: Mapping[str, Any],
) -> RequestKind:
    """Chat completion requests, one per input; `messages` turns an input into messages."""

    def check(item: object) -> Any:
        return list(messages(item))

    def body(payloads: list[Any]) -> dict[str, Any]:
        return {**params, "model": model, "messages": payloads[0]}

    return RequestKind("chat", CHAT, model, {**request, "params": dict(params)}, check, body)


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


def _line(first: int, count: int, endpoint: str, body: dict[str, Any]) -> bytes:
    document = {
        "custom_id": custom_id(first, count),
        "method": "POST",
        "url": endpoint,
        "body": body,
    }
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: JSON's \u escape carries it
        return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def item_preview(item: object) -> object:
    """What a failure record previews: the head of a text, a bounded repr otherwise."""
    return item[:_PREVIEW_CHARS] if isinstance(item, str) else preview(item)


@dataclass
class Plan:
    """What planning produced: the shards (files written), the rejected inputs, the fingerprint."""

    fingerprint: str
    total: int
    shards: list[Shard] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


class _ShardWriter:
    """Fills shard files one line at a time, within the limits."""

    def __init__(self, store: JobStore, limits: Limits, max_inputs: int) -> None:
        self.store = store
        self.limits = limits
        self.max_inputs = max_inputs
        self.shards: list[Shard] = []
        self._stack: contextlib.ExitStack | None = None
        self._stream: IO[bytes] | None = None
        self._indices: list[int] = []
        self._lines = 0
        self._bytes = 0

    def add(self, line: bytes, indices: list[int]) -> None:
        full = (
            self._lines >= self.limits.max_lines
            or len(self._indices) + len(indices) > self.max_inputs
            or self._bytes + len(line) > self.limits.max_bytes
        )
        if self._stream is not None and full:
            self.close()
        if self._stream is None:
            self._stack = contextlib.ExitStack()
            self._stream = self._stack.enter_context(self.store.shard_writer(len(self.shards)))
        self._stream.write(line)
        self._indices.extend(indices)
        self._lines += 1
        self._bytes += len(line)

    def close(self) -> None:
        """Finish the current shard file (atomically) and record the shard."""
        if self._stack is None:
            return
        self._stack.close()
        self.shards.append(
            Shard(
                shard=len(self.shards),
                round=0,
                ranges=to_ranges(self._indices),
                lines=self._lines,
                bytes=self._bytes,
            )
        )
        self._stack = self._stream = None
        self._indices, self._lines, self._bytes = [], 0, 0

    def abort(self, exc: BaseException) -> None:
        """Drop the current shard file (its temporary file is removed)."""
        if self._stack is not None:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            self._stack = self._stream = None


def plan_shards(
    items: Iterable[object], kind: RequestKind, limits: Limits, store: JobStore
) -> Plan:
    """Read `items` once: check each, write the request lines into shard files within `limits`.

    Embedding inputs share a line up to ``limits.inputs_per_line`` (consecutive inputs only: a
    line's inputs are ``first .. first + count - 1``, its ``custom_id`` says which). Holds one
    line at a time in memory; shard files are written as they fill.
    """
    hasher = Fingerprint()
    plan = Plan(fingerprint="", total=0)
    per_line = limits.inputs_per_line if kind.shares_lines else 1
    max_inputs = limits.max_inputs if kind.kind == "embeddings" else limits.max_lines
    writer = _ShardWriter(store, limits, max_inputs)
    pending: list[tuple[int, Any]] = []
    pending_bytes = 0

    def emit(group: list[tuple[int, Any]]) -> None:
        first = group[0][0]
        line = _line(first, len(group), kind.endpoint, kind.body([p for _, p in group]))
        if len(line) > limits.max_bytes:
            if len(group) > 1:
                half = len(group) // 2
                emit(group[:half])
                emit(group[half:])
                return
            plan.rejected.append(
                _rejected(
                    first,
                    InvalidInput(
                        f"its request line has {len(line)} bytes; a batch file takes at most "
                        f"{limits.max_bytes}"
                    ),
                    group[0][1],
                )
            )
            return
        writer.add(line, [index for index, _ in group])

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            emit(pending)
        pending, pending_bytes = [], 0

    try:
        for index, item in enumerate(items):
            hasher.update(item)
            try:
                payload = kind.check(item)
            except InvalidInput as exc:
                plan.rejected.append(_rejected(index, exc, item))
                flush()  # a line holds consecutive inputs only
                continue
            size = len(payload.encode("utf-8", "surrogatepass")) if per_line > 1 else 0
            if pending and (len(pending) >= per_line or pending_bytes + size > MAX_LINE_TEXT_BYTES):
                flush()
            pending.append((index, payload))
            pending_bytes += size
        flush()
        writer.close()
    except BaseException as exc:
        writer.abort(exc)
        raise
    plan.shards = writer.shards
    plan.fingerprint = hasher.hexdigest()
    plan.total = hasher.count
    return plan


def _rejected(index: int, exc: InvalidInput, item: object) -> dict[str, Any]:
    return {
        "index": index,
        "error_type": type(exc).__name__,
        "message": str(exc),
        "item": item_preview(item),
    }


def _line_ids(line: bytes) -> tuple[int, int] | None:
    # Our own lines start with {"custom_id":"i<first>[+<count>]", ...: no need to parse them.
    prefix = b'{"custom_id":"i'
    if line.startswith(prefix):
        end = line.find(b'"', len(prefix))
        found = index_of("i" + line[len(prefix) : end].decode("ascii", "replace"))
        if found is not None:
            return found
    return index_of(json.loads(line).get("custom_id"))


def line_ranges(data: bytes) -> list[tuple[int, int]]:
    """``(first, count)`` of each line of a shard file, in order."""
    return [ids for line in data.splitlines() if (ids := _line_ids(line)) is not None]


def filter_lines(data: bytes, keep: set[int]) -> tuple[bytes, list[int]]:
    """The lines of a shard file whose inputs are in `keep`, and their inputs in order."""
    lines: list[bytes] = []
    order: list[int] = []
    for line in data.splitlines(keepends=True):
        ids = _line_ids(line)
        if ids is not None and ids[0] in keep:
            lines.append(line)
            order.extend(range(ids[0], ids[0] + ids[1]))
    return b"".join(lines), order


def line_inputs(data: bytes, wanted: set[int]) -> dict[int, Any]:
    """The input (a text, or messages) of each input of a shard file that is in `wanted`."""
    found: dict[int, Any] = {}
    for line in data.splitlines():
        ids = _line_ids(line)
        if ids is None or wanted.isdisjoint(range(ids[0], ids[0] + ids[1])):
            continue
        body = json.loads(line)["body"]
        if "messages" in body:
            found[ids[0]] = body["messages"]
            continue
        texts = body["input"] if ids[1] > 1 else [body["input"]]
        for offset, text in enumerate(texts):
            if ids[0] + offset in wanted:
                found[ids[0] + offset] = text
    return found
