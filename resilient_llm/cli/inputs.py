"""Input lines → the texts the library gets, and the id and line of each until it is done."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import IO

from .console import Console, Tally
from .io import Document, JsonlWriter, Malformed, id_key, parse_line

__all__ = ["InputLines"]


@dataclass
class InputLines:
    """Input lines → the texts the library gets; the id and line of each text until it is done.

    Malformed lines and duplicate ids fail here, never reaching the library; ids already in OUT
    are skipped. Only texts handed to the library and not yet finished are remembered: the
    batch bounds how many.
    """

    source: IO[bytes]
    done: set[str]  # the ids already in OUT
    _: KW_ONLY
    tally: Tally
    console: Console
    failures: JsonlWriter
    keep_malformed: bool = False
    #: The failures-file records of malformed lines, with ``keep_malformed``.
    malformed: list[dict[str, object]] = field(default_factory=list, init=False)
    _seen: set[str] = field(default_factory=set, init=False)
    _in_flight: dict[int, tuple[object, int]] = field(default_factory=dict, init=False)
    _positions: Iterator[int] = field(default_factory=itertools.count, init=False)

    def texts(self) -> Iterator[object]:
        tally = self.tally
        for number, raw in enumerate(self.source, start=1):
            parsed = parse_line(raw, number)
            if parsed is None:
                tally.blank += 1
                continue
            tally.lines += 1
            if isinstance(parsed, Malformed):
                self._malformed(parsed.line, parsed.id, parsed.reason)
                continue
            assert isinstance(parsed, Document)
            key = id_key(parsed.id)
            if key in self._seen:
                self._malformed(parsed.line, parsed.id, f"duplicate id {key}")
                continue
            self._seen.add(key)
            if key in self.done:
                tally.skipped += 1
                continue
            self._in_flight[next(self._positions)] = (parsed.id, parsed.line)
            yield parsed.text

    def take(self, index: int) -> tuple[object, int]:
        """The id and line of the text at batch position ``index``, now done."""
        return self._in_flight.pop(index)

    def _malformed(self, line: int, ident: object, reason: str) -> None:
        self.tally.malformed += 1
        record: dict[str, object] = {
            "id": ident,
            "line": line,
            "error_type": "MalformedLine",
            "message": reason,
            "status": None,
            "attempts": 0,
        }
        self.failures.write(record)
        if self.keep_malformed:
            self.malformed.append(record)
        self.console.report_line(f"line {line}: {reason}; skipped", self.failures.path)
