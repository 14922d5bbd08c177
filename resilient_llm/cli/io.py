"""Files of the command line: reading input lines, resuming from an output file, writing JSONL.

No printing and no network here; :mod:`resilient_llm.cli.console` decides what to say.

Input lines are JSONL (``{"id": ..., "text": ...}``) or plain text (one document a line, its id
the 1-based line number), decided line by line: a line that starts with ``{`` must be a JSON
object with a ``"text"`` key (anything else starting with ``{`` is malformed); any other
non-blank line is plain text.
"""

from __future__ import annotations

import contextlib
import errno
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Document",
    "JsonlWriter",
    "Malformed",
    "ResumeState",
    "WriteFailed",
    "count_lines",
    "failures_path_for",
    "id_key",
    "parse_line",
    "scan_output",
]

Id = str | int

_BOM = b"\xef\xbb\xbf"
# Bytes read per block when counting lines or scanning an output file.
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Document:
    """One input to process.

    Attributes:
        line: 1-based line number in the input.
        id: the record's ``"id"``, or the line number when it has none.
        text: what to send (not checked here: the library fails a non-string or blank text).
    """

    line: int
    id: Id
    text: object


@dataclass(frozen=True, slots=True)
class Malformed:
    """An input line that cannot be read as a document.

    Attributes:
        line: 1-based line number in the input.
        reason: why, in a few words.
        id: the record's id when it could be read, else ``None``.
    """

    line: int
    reason: str
    id: Id | None = None


def id_key(value: Id) -> str:
    """A canonical key for an id: ``1`` and ``"1"`` are different ids, as in the JSON."""
    return json.dumps(value, ensure_ascii=False)


def _valid_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_line(raw: bytes, line: int) -> Document | Malformed | None:
    """Read one input line (without or with its line ending); ``None`` for a blank line.

    Args:
        raw: the bytes of the line.
        line: its 1-based number, the id of a plain-text line.

    Returns:
        A :class:`Document`, a :class:`Malformed` line, or ``None`` when it is blank.
    """
    if line == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    raw = raw.rstrip(b"\r\n")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(line, f"not UTF-8 (byte {exc.start + 1})")
    if not text.strip():
        return None
    if not text.lstrip().startswith("{"):
        return Document(line, line, text)
    try:
        record = json.loads(text)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        column = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return Malformed(line, f"invalid JSON: {reason}{column}")
    if not isinstance(record, dict):
        return Malformed(line, "invalid JSON: not an object")
    ident: Any = record.get("id", line)
    if ident is None:
        ident = line
    if not _valid_id(ident):
        return Malformed(line, f'"id" must be a string or an integer, not {type(ident).__name__}')
    if "text" not in record:
        return Malformed(line, 'JSON object without a "text" key', ident)
    return Document(line, ident, record["text"])


def count_lines(path: Path) -> int:
    """Count the lines of a file (a last line without a newline counts), for the progress bar."""
    count = 0
    last = b"\n"
    with path.open("rb") as file:
        while block := file.read(_BLOCK):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def failures_path_for(output: Path) -> Path:
    """``out.jsonl`` → ``out.failures.jsonl``; any other name gets ``.failures.jsonl`` appended."""
    if output.suffix == ".jsonl":
        return output.with_suffix(".failures.jsonl")
    return output.with_name(output.name + ".failures.jsonl")


# --- resuming -------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_ID_PREFIX = b'{"id":'


@dataclass
class ResumeState:
    """What an existing output file already holds.

    Attributes:
        done: keys (:func:`id_key`) of the ids with a result.
        lines: complete result lines found.
        unreadable: lines in the middle that could not be read (left as they are).
        cut_bytes: bytes of an incomplete last line that were removed (an interrupted write).
    """

    done: set[str]
    lines: int = 0
    unreadable: int = 0
    cut_bytes: int = 0


def _line_id(line: bytes) -> object:
    # The writer puts the id first, so most lines need only their first few bytes decoded:
    # a vector of 3,072 floats is not parsed just to learn its id.
    if line.startswith(_ID_PREFIX):
        try:
            value, _ = _DECODER.raw_decode(line[len(_ID_PREFIX) : 400].decode("utf-8", "replace"))
        except ValueError:
            pass
        else:
            return value
    record = json.loads(line)
    return record.get("id") if isinstance(record, dict) else None


def scan_output(path: Path, *, repair: bool = True) -> ResumeState:
    """Collect the ids an output file already has; cut off an incomplete last line.

    A run that was killed in the middle of a write can leave a last line without its newline;
    with ``repair`` it is truncated away so that appending starts on a fresh line (that item is
    simply done again).

    Args:
        path: the output file (it may not exist).
        repair: truncate an incomplete last line.

    Returns:
        The :class:`ResumeState`.
    """
    state = ResumeState(done=set())
    if not path.exists():
        return state
    complete_end = 0
    with path.open("rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                state.cut_bytes = len(line)
                break
            complete_end += len(line)
            stripped = line.strip()
            if not stripped:
                continue
            try:
                ident = _line_id(stripped)
            except ValueError:
                state.unreadable += 1
                continue
            if _valid_id(ident):
                assert isinstance(ident, (str, int))
                state.done.add(id_key(ident))
                state.lines += 1
            else:
                state.unreadable += 1
    if state.cut_bytes and repair:
        with path.open("r+b") as file:
            file.truncate(complete_end)
    return state


# --- writing --------------------------------------------------------------------------------


class WriteFailed(Exception):
    """A line could not be written (disk full, file too large, I/O error); the file is whole.

    Attributes:
        path: the file.
        error: the ``OSError``.
    """

    def __init__(self, path: Path, error: OSError) -> None:
        if error.filename is None and error.strerror:
            # A failed write(2) names no file; the person reading the message needs it.
            error = OSError(error.errno, error.strerror, str(path))
        super().__init__(f"cannot write {path}: {error}")
        self.path = path
        self.error = error


class JsonlWriter:
    """Appends one JSON object per line; each line reaches the OS whole, or not at all.

    Unbuffered: a line is handed to the OS as soon as it is written, so a crash of the process
    loses at most the line being written (resuming removes it). A line that fails half-way (a
    full disk) is cut off again at once, so the file never holds a torn line while this process
    runs. Thread-safe.

    Args:
        path: the file.
        truncate: start the file empty instead of appending to it.
    """

    def __init__(self, path: Path, *, truncate: bool = False) -> None:
        self.path = path
        self._truncate = truncate
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.written = 0

    def open(self) -> None:
        """Open (and create) the file now, so a file that cannot be written fails before work.

        Raises:
            OSError: it cannot be opened for writing.
        """
        with self._lock:
            if self._file is None:
                self._file = self.path.open("wb" if self._truncate else "ab", buffering=0)

    def write(self, record: dict[str, object]) -> None:
        """Append ``record`` as one line.

        Raises:
            WriteFailed: the line could not be written whole (it was removed again).
        """
        data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._file is None:
                raise RuntimeError(f"{self.path} is not open")
            file = self._file
            start = file.tell()
            try:
                view = memoryview(data)
                while view:
                    # A raw write may take only part of the line (a disk that fills up).
                    taken = file.write(view)
                    if not taken:
                        raise OSError(errno.EIO, "the file took no more bytes", str(self.path))
                    view = view[taken:]
            except OSError as exc:
                with contextlib.suppress(OSError):  # resuming removes a torn last line too
                    file.truncate(start)
                raise WriteFailed(self.path, exc) from exc
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def remove_if_empty(self) -> None:
        """Close, and remove the file when nothing was written (no failures, no failures file).

        Raises:
            OSError: it could not be removed.
        """
        self.close()
        if self.written == 0 and self.path.exists() and self.path.stat().st_size == 0:
            self.path.unlink()
