"""The command line's record of a Batch API job: the id and input line of each of its inputs.

The library's state file knows a job's inputs by position. To write OUT and the failures file,
the command line needs each input's id and line in IN, also in a process that does not read IN
(``batch collect``), and the options the job was made with, to refuse a re-run that asks for
others. Next to the state file ``out.batch.json`` it keeps ``out.batch.json.ids.jsonl``: a
header line (the command, its files and options, the job's id, the counts of IN and its
malformed lines), then one ``[id, line]`` per input in the job's order. It is written
atomically once the job is made, before anything is sent: a state without its record was
never submitted, and is made again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch_api._state import atomic_writer

__all__ = ["JobRecord", "record_path_for", "remove_job_files", "state_path_for"]

FORMAT = "resilient_llm.cli.batch_job"
VERSION = 1


def state_path_for(output: Path) -> Path:
    """``out.jsonl`` → ``out.batch.json``; any other name gets ``.batch.json`` appended."""
    if output.suffix == ".jsonl":
        return output.with_suffix(".batch.json")
    return output.with_name(output.name + ".batch.json")


def record_path_for(state: Path) -> Path:
    """Where the record of the job in `state` lives."""
    return state.with_name(state.name + ".ids.jsonl")


def remove_job_files(state: Path) -> None:
    """Remove a job's state, its request files, its lock and its record.

    The state goes first: from then on there is no job to resume, whatever is left.

    Raises:
        OSError: a file could not be removed.
    """
    state.unlink(missing_ok=True)
    record_path_for(state).unlink(missing_ok=True)
    shards = state.with_name(state.name + ".shards")
    if shards.is_dir():
        shutil.rmtree(shards)
    state.with_name(state.name + ".lock").unlink(missing_ok=True)


@dataclass
class JobRecord:
    """What the command line knows about a Batch API job it made.

    Attributes:
        job_id: the library's job id (in the state file and the batches' metadata).
        command: ``embed`` or ``summarize``.
        input: IN, absolute.
        output: OUT, absolute.
        failures: the failures file, absolute.
        base_url: the server the batches run on (``None``: OpenAI).
        model: the model of every request.
        request: the options that shape a request (``dimensions``; ``instructions``,
            ``max_words``).
        tally: counts of IN when the job was made: ``lines``, ``blank``, ``skipped`` (already
            in OUT), ``malformed``.
        malformed: the failures-file records of IN's malformed lines.
        ids: ``(id, line)`` of each input, in the job's order.
    """

    job_id: str
    command: str
    input: str
    output: str
    failures: str
    base_url: str | None
    model: str
    request: dict[str, Any]
    tally: dict[str, int] = field(default_factory=dict)
    malformed: list[dict[str, object]] = field(default_factory=list)
    ids: list[tuple[object, int]] = field(default_factory=list)

    def write(self, path: Path) -> None:
        """Replace `path` with this record, atomically."""
        header = {"format": FORMAT, "version": VERSION, "inputs": len(self.ids)}
        header.update({k: v for k, v in self.__dict__.items() if k != "ids"})
        with atomic_writer(path) as stream:
            stream.write(_line(header))
            for ident, line in self.ids:
                stream.write(_line([ident, line]))

    @classmethod
    def read(cls, path: Path) -> JobRecord:
        """The record at `path`.

        Raises:
            FileNotFoundError: there is none.
            ValueError: it is damaged or not such a record.
        """
        with path.open("rb") as stream:
            lines = iter(stream)
            try:
                header = json.loads(next(lines))
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    raise ValueError("not a record of the command line's batch jobs")
                if header.get("version") != VERSION:
                    raise ValueError(f"record format version {header.get('version')!r}")
                count = header.pop("inputs")
                del header["format"], header["version"]
                ids = [(ident, int(number)) for ident, number in map(json.loads, lines)]
                record = cls(**header, ids=ids)
            except (StopIteration, ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path} is damaged: {exc}") from exc
        if len(ids) != count:
            raise ValueError(f"{path} is damaged: {len(ids)} of its {count} ids")
        return record


def _line(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
