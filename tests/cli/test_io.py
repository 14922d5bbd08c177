"""The command line's files: input lines, resuming from OUT, the failures path, line counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient_llm.cli.io import (
    Document,
    JsonlWriter,
    Malformed,
    count_lines,
    failures_path_for,
    parse_line,
    scan_output,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"id": "x", "text": "hi"}\n', Document(4, "x", "hi")),
        (b'{"id": 7, "text": "hi"}\r\n', Document(4, 7, "hi")),
        (b'{"text": "no id"}', Document(4, 4, "no id")),
        (b'{"id": null, "text": "null id"}', Document(4, 4, "null id")),
        (b'{"id": "x", "text": 5}', Document(4, "x", 5)),
        (b"plain text\n", Document(4, 4, "plain text")),
        (b"[1, 2]\n", Document(4, 4, "[1, 2]")),
        (b"  \t\n", None),
        (b"", None),
        (b'{"id": "x", "text": "hi"', Malformed(4, "invalid JSON: Expecting ',' delimiter")),
        (b'{"id": "x"}', Malformed(4, 'JSON object without a "text" key', "x")),
        (b'{"id": 1.5, "text": "t"}', Malformed(4, '"id" must be a string or an integer')),
        (b'{"id": true, "text": "t"}', Malformed(4, '"id" must be a string or an integer')),
        (b"\xff\xfe", Malformed(4, "not UTF-8")),
    ],
)
def test_parse_line(raw: bytes, expected: Document | Malformed | None) -> None:
    parsed = parse_line(raw, 4)
    if isinstance(expected, Malformed):
        assert isinstance(parsed, Malformed)
        assert (parsed.line, parsed.id) == (expected.line, expected.id)
        assert parsed.reason.startswith(expected.reason)
    else:
        assert parsed == expected


def test_parse_line_drops_a_byte_order_mark_on_line_1() -> None:
    assert parse_line(b'\xef\xbb\xbf{"id": 1, "text": "t"}\n', 1) == Document(1, 1, "t")


def test_scan_output(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert scan_output(path).done == set()
    path.write_bytes(
        b'{"id":"a","embedding":[1.0]}\n{"embedding": [2.0], "id": 3}\ngarbage\n\n{"id":"b","embe'
    )
    state = scan_output(path)
    assert state.done == {'"a"', "3"}
    assert (state.lines, state.unreadable) == (2, 1)
    assert state.cut_bytes == len(b'{"id":"b","embe')
    assert path.read_bytes().endswith(b"\n\n")


def test_small_helpers(tmp_path: Path) -> None:
    assert failures_path_for(Path("a/out.jsonl")) == Path("a/out.failures.jsonl")
    assert failures_path_for(Path("out.txt")) == Path("out.txt.failures.jsonl")
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a\nb\nc")
    assert count_lines(path) == 3
    path.write_bytes(b"a\nb\n")
    assert count_lines(path) == 2


def test_writer_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id":"old"}\n')
    writer = JsonlWriter(path)
    with pytest.raises(RuntimeError, match="not open"):
        writer.write({"id": "x"})
    writer.open()
    writer.write({"id": "é", "embedding": [1.5]})
    writer.close()
    assert path.read_bytes() == '{"id":"old"}\n{"id":"é","embedding":[1.5]}\n'.encode()
    assert writer.written == 1


def test_a_failures_file_starts_empty_and_is_removed_when_nothing_failed(tmp_path: Path) -> None:
    path = tmp_path / "out.failures.jsonl"
    path.write_bytes(b'{"id":"failed last time"}\n')
    unused = JsonlWriter(path, truncate=True)
    unused.open()
    assert path.read_bytes() == b""
    unused.remove_if_empty()
    assert not path.exists()

    used = JsonlWriter(path, truncate=True)
    used.open()
    used.write({"id": 1})
    used.remove_if_empty()
    assert path.read_bytes() == b'{"id":1}\n'
