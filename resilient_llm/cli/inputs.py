"""Input lines → the texts the library gets, and the id and line of each until it is done."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import IO

from .console import Console, Tally
from .io import Document, JsonlWriter, Malformed, id_key, parse_line

__all__ = ["InputLines"]


class InputLines:
    """Input lines → the texts the library gets; the id and line of each text until it is done.

    Malformed lines and duplicate ids fail here, never reaching the library; ids already in OUT
    are skipped. Only texts handed to the library and not yet finished are remembered: the
    batch bounds how many.
    """

    def __init__(
        self,
        source: IO[bytes],
        done: set[str],
        *,
        tally: Tally,
        console: Console,
        failures: JsonlWriter,
        keep_malformed: bool = False,
    ) -> None:
        self._source = source
        self._done = done
        self._tally = tally
        self._console = console
        self._failures = failures
        self._seen: set[str] = set()
        self._in_flight: dict[int, tuple[object, int]] = {}
        self._positions = itertools.count()
        self._keep_malformed = keep_malformed
        #: The failures-file records of malformed lines, with ``keep_malformed``.
        self.malformed: list[dict[str, object]] = []

    def texts(self) -> Iterator[object]:
        tally = self._tally
        for number, raw in enumerate(self._source, start=1):
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
            if key in self._done:
                tally.skipped += 1
                continue
            self._in_flight[next(self._positions)] = (parsed.id, parsed.line)
            yield parsed.text

    def take(self, index: int) -> tuple[object, int]:
        """The id and line of the text at batch position ``index``, now done."""
        return self._in_flight.pop(index)

    def _malformed(self, line: int, ident: object, reason: str) -> None:
        self._tally.malformed += 1
        record: dict[str, object] = {
            "id": ident,
            "line": line,
            "error_type": "MalformedLine",
            "message": reason,
            "status": None,
            "attempts": 0,
        }
        self._failures.write(record)
        if self._keep_malformed:
            self.malformed.append(record)
        self._console.report_line(f"line {line}: {reason}; skipped", self._failures.path)
