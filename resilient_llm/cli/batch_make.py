"""A Batch API job of the command line made, resumed or reopened, before anything is sent.

The checks of ``--via batch`` and its state file come first. Then :class:`JobMaker` makes the
job from IN and writes its record (:mod:`.batch_record`), resumes the job its state file holds
(IN checked against the record, the options against the command's), or reopens it from the
record alone (``batch collect``). Nothing here touches the network: :mod:`.batch` runs the job.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from .._client import ResilientClient
from .._messages import describe
from ..batch_api import BatchJob, BatchJobOptions, JobProgress
from .batch_record import JobRecord, record_path_for, remove_job_files, state_path_for
from .inputs import InputLines
from .io import Id, JsonlWriter, id_key
from .run import JobSettings, RunBase
from .status import UsageError

__all__ = [
    "JobMaker",
    "check_settings",
    "job_options",
    "never_sent",
    "open_job",
    "read_record",
    "record_key",
    "state_path",
]

# Input and result files take up to 200 MB each: a request's --deadline would cut them off on a
# slow link, so they get at least this long.
FILE_DEADLINE = 1800.0
# The wait between two looks at the batches grows to this while nothing changes.
MAX_POLL_INTERVAL = 60.0


def record_key(ident: object) -> str:
    """The key of an id in IN or in the job's record, as OUT's ids are kept."""
    return id_key(cast(Id, ident))  # ids come from InputLines or the record: str or int


# --- the checks before anything is made or sent ----------------------------------------------


def check_settings(settings: JobSettings) -> None:
    if settings.input == "-":
        raise UsageError(
            "--via batch reads IN again when it resumes a job: give a file, not - (stdin)"
        )
    if settings.too_long == "truncate":
        raise UsageError(
            "--too-long truncate works on live requests only; a Batch API job fails the inputs "
            "over the model's limit (leave out --via batch to truncate them)"
        )
    if settings.rpm is not None or settings.tpm is not None:
        raise UsageError(
            "--rpm and --tpm pace live requests; the Batch API has a rate pool of its own "
            "(leave them out with --via batch)"
        )


def state_path(settings: JobSettings, output: Path, failures: Path) -> Path:
    state = settings.state or state_path_for(output)
    if not state.parent.is_dir():
        raise UsageError(f"the folder of the state file does not exist: {state.parent}")
    others = [output, failures]
    if settings.input != "-":
        others.append(Path(settings.input))
    if any(state.resolve() == other.resolve() for other in others):
        raise UsageError(f"the state file {state} is IN, OUT or the failures file")
    if state.is_dir():
        raise UsageError(f"the state file is a folder: {state}")
    return state


def job_options(settings: JobSettings) -> BatchJobOptions:
    """The library's options for what the command line asked.

    Raises:
        UsageError: the library refused one.
    """
    try:
        return BatchJobOptions(
            max_lines=settings.lines_per_batch,
            inputs_per_line=settings.batch_size or 1,
            max_in_flight=settings.max_in_flight,
            poll_interval=settings.poll_interval,
            max_poll_interval=max(settings.poll_interval, MAX_POLL_INTERVAL),
            upload_deadline=max(settings.deadline, FILE_DEADLINE),
            download_deadline=max(settings.deadline, FILE_DEADLINE),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(describe(exc)) from None


def never_sent(progress: JobProgress) -> bool:
    """No batch was ever created for the job: it can be made again at no cost."""
    return not progress.cancelled and set(progress.shards) <= {"planned"}


def open_job(client: ResilientClient, state: Path) -> BatchJob:
    try:
        return BatchJob.open(client, state)
    except FileNotFoundError:
        raise UsageError(f"no batch job state at {state}") from None
    except ValueError as exc:
        raise UsageError(describe(exc)) from None


def read_record(state: Path) -> JobRecord | None:
    try:
        return JobRecord.read(record_path_for(state))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UsageError(describe(exc)) from None


# --- the job made, resumed or reopened (no network) ------------------------------------------


@dataclass
class JobMaker(RunBase):
    """One run of a Batch API job over files, up to its job: made, resumed or reopened.

    Args:
        state: the job's state file.
        options: the library's options for a job to make (``None``: the job is reopened).
    """

    state: Path
    options: BatchJobOptions | None

    @property
    def model(self) -> str:
        """The model of the job: ``--model``, else the client's for the kind."""
        if self.settings.model:
            return self.settings.model
        embed = self.settings.kind == "embed"
        return self.client.embedding_model if embed else self.client.chat_model

    @property
    def request(self) -> dict[str, Any]:
        """The options of the kind the job is made with (its record keeps them)."""
        settings = self.settings
        if settings.kind == "embed":
            return {"dimensions": settings.dimensions}
        return {"instructions": settings.instructions, "max_words": settings.max_words}

    def make(
        self, source: IO[bytes], done: set[str], failures: JsonlWriter
    ) -> tuple[BatchJob, JobRecord] | None:
        """``embed``/``summarize --via batch``: the job made from IN, or resumed, and its
        record; ``None`` when there is nothing to send (every id is in OUT already)."""
        existing = self._existing_record()
        inputs = InputLines(
            source,
            set() if existing else done,
            tally=self.tally,
            console=self.console,
            failures=failures,
            keep_malformed=True,
        )
        if existing is not None:
            job = self._new_job(self._job_texts(inputs, existing, done), resuming=existing)
            self.console.say(f"batch job {job.id}: resuming from {self.state}")
            return job, existing
        ids: list[tuple[object, int]] = []

        def texts() -> Iterator[object]:
            for position, text in enumerate(inputs.texts()):
                ids.append(inputs.take(position))
                yield text

        stream = texts()
        end = object()
        first = next(stream, end)
        if first is end:
            return None
        job = self._new_job(itertools.chain([first], stream), resuming=None)
        tally = self.tally
        record = JobRecord(
            job_id=job.id,
            command=self.settings.kind,
            input=str(Path(self.settings.input).resolve()),
            output=str(self.output.resolve()),
            failures=str(self.failures_path.resolve()),
            base_url=self.settings.base_url,
            model=self.model,
            request=self.request,
            tally={
                "lines": tally.lines,
                "blank": tally.blank,
                "skipped": tally.skipped,
                "malformed": tally.malformed,
            },
            malformed=inputs.malformed,
            ids=ids,
        )
        # Before anything is sent: a state without its record is made again (_existing_record).
        record.write(record_path_for(self.state))
        return job, record

    def _existing_record(self) -> JobRecord | None:
        """The record of the job in the state file, or ``None`` when a new job is to be made."""
        if not self.state.exists():
            return None
        job = open_job(self.client, self.state)
        record = read_record(self.state)
        if record is None or record.job_id != job.id:
            if never_sent(job.progress()):  # killed before its record was written
                remove_job_files(self.state)
                return None
            raise UsageError(
                f"{self.state} holds batch job {job.id}, which has no record of its inputs "
                f"here ({record_path_for(self.state).name}): collect it with BatchJob.open() in "
                f"Python, cancel it (resilient-llm batch cancel {self.state}), or give another "
                "--state"
            )
        differences = [
            f"{name} {old!r} (this command: {new!r})"
            for name, old, new in (
                ("the command", record.command, self.settings.kind),
                ("--model", record.model, self.model),
                ("--base-url", record.base_url, self.settings.base_url),
                *(
                    (f"--{key.replace('_', '-')}", value, self.request.get(key))
                    for key, value in record.request.items()
                ),
            )
            if old != new
        ]
        if differences:
            raise UsageError(
                f"{self.state} holds batch job {job.id}, made with "
                + ", ".join(differences)
                + ": run the command with the job's options to resume it, cancel it "
                f"(resilient-llm batch cancel {self.state}), or give another --state"
            )
        return record

    def _changed(self, record: JobRecord) -> UsageError:
        return UsageError(
            f"IN no longer holds the inputs of batch job {record.job_id} ({self.state}): "
            f"restore it, or collect the job as it was made: resilient-llm batch collect "
            f"{self.state}"
        )

    def _job_texts(self, inputs: InputLines, record: JobRecord, done: set[str]) -> Iterator[object]:
        """The texts of IN that make the job, in its order; IN checked against the record."""
        expected = iter(record.ids)
        keys = {record_key(ident) for ident, _ in record.ids}
        added = 0
        for position, text in enumerate(inputs.texts()):
            ident, _ = inputs.take(position)
            key = record_key(ident)
            if key not in keys:
                self.tally.skipped += 1
                added += key not in done
                continue
            want = next(expected, None)
            if want is None or record_key(want[0]) != key:
                raise self._changed(record)
            yield text
        if next(expected, None) is not None:
            raise self._changed(record)
        if added:
            self.console.say(
                f"{added:,} inputs of IN are not in batch job {record.job_id} (added since it "
                "was made): run the command again once the job is done to send them"
            )

    def _new_job(self, texts: Iterator[object], *, resuming: JobRecord | None) -> BatchJob:
        make: Callable[..., BatchJob]
        make = BatchJob.embeddings if self.settings.kind == "embed" else BatchJob.summaries
        try:
            return make(
                self.client,
                texts,
                state=self.state,
                model=self.settings.model,
                options=self.options,
                **self.request,  # the options of the kind: dimensions, or the summary's
            )
        except (TypeError, ValueError) as exc:
            if resuming is not None:  # the library's check of the inputs against the job
                raise self._changed(resuming) from None
            raise UsageError(describe(exc)) from None

    def reopen(self, record: JobRecord, failures: JsonlWriter) -> tuple[BatchJob, JobRecord] | None:
        """``batch collect``: the job and its record; IN's counts and malformed lines from it."""
        job = open_job(self.client, self.state)
        if job.id != record.job_id:
            raise UsageError(
                f"{record_path_for(self.state)} is the record of batch job {record.job_id}, "
                f"not of {job.id} in {self.state}"
            )
        for name, value in record.tally.items():
            setattr(self.tally, name, value)
        for line in record.malformed:
            failures.write(line)
        return job, record
