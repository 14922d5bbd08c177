"""Jobs through OpenAI's Batch API from the command line: ``embed``/``summarize --via batch``,
and ``batch status|cancel|collect STATE``.

The same input formats, OUT and failures files, summary and exit statuses as the live path
(:mod:`.job`); the work goes through :class:`~resilient_llm.batch_api.BatchJob`, whose state file
(by default next to OUT: ``out.batch.json``) makes the job survive anything:

- the first run reads IN, leaves out the ids already in OUT, makes the job (its request files go
  next to the state), writes the job's record (:mod:`.batch_record`: each input's id and line),
  then submits the batches and waits for them (``--no-wait``: returns at once, exit 75);
- running the same command again resumes the job, in any state: no batch is created twice, IN
  is checked against the job first, and ids already in OUT are skipped when results are written;
- once every outcome is written the job's files are removed: running the command again then
  starts a new job for the ids not in OUT (the failures), as the live path retries them.

Ctrl-C, SIGTERM and stops leave the batches running on the server, and say how to go on.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from .._batch.results import BatchResult
from .._client import ResilientClient
from .._messages import describe
from ..batch_api import BatchAPIUnsupported, BatchJob, BatchJobOptions, JobProgress
from ..batch_api._state import JobStore
from .batch_record import JobRecord, record_path_for, remove_job_files, state_path_for
from .console import Console, Reasons, Report, Tally, make_bar, render_summary, route_logs
from .inputs import InputLines
from .io import Id, JsonlWriter, WriteFailed, failures_path_for, id_key
from .job import JobSettings, check_paths, make_client, open_input, open_outputs
from .outcomes import Outcomes
from .status import (
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_STOPPED,
    EXIT_TERMINATED,
    Terminated,
    UsageError,
    sigterm_as_interrupt,
)

__all__ = ["cancel_job", "collect_job", "job_status", "run_batch_job"]

# Input and result files take up to 200 MB each: a request's --deadline would cut them off on a
# slow link, so they get at least this long.
FILE_DEADLINE = 1800.0
# The wait between two looks at the batches grows to this while nothing changes.
MAX_POLL_INTERVAL = 60.0
# Without a terminal: a progress line when the job moved, at most this often.
LINE_EVERY = 10.0


def _prog(kind: str) -> str:
    return f"resilient-llm {kind}"


def _key(ident: object) -> str:
    return id_key(cast(Id, ident))  # ids come from InputLines or the record: str or int


# --- the checks before anything is made or sent ----------------------------------------------


def _check_settings(settings: JobSettings) -> None:
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


def _state_path(settings: JobSettings, output: Path, failures: Path) -> Path:
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


def _never_sent(progress: JobProgress) -> bool:
    """No batch was ever created for the job: it can be made again at no cost."""
    return not progress.cancelled and set(progress.shards) <= {"planned"}


def _shards_text(progress: JobProgress) -> str:
    return ", ".join(f"{count} {stage}" for stage, count in sorted(progress.shards.items()))


def _open_state(client: ResilientClient, state: Path) -> BatchJob:
    try:
        return BatchJob.open(client, state)
    except FileNotFoundError:
        raise UsageError(f"no batch job state at {state}") from None
    except ValueError as exc:
        raise UsageError(describe(exc)) from None


def _read_record(state: Path) -> JobRecord | None:
    try:
        return JobRecord.read(record_path_for(state))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise UsageError(describe(exc)) from None


# --- embed / summarize --via batch -----------------------------------------------------------


def run_batch_job(settings: JobSettings) -> int:
    """``embed``/``summarize --via batch``: make or resume the job, wait, write the outcomes.

    Raises:
        UsageError: a problem found before anything was sent.
        KeyboardInterrupt: Ctrl-C before the job was made (nothing to save).
    """
    _check_settings(settings)
    output, failures_path = check_paths(settings)
    state = _state_path(settings, output, failures_path)
    options = job_options(settings)
    client = make_client(settings)
    with client, open_input(settings.input) as (source, total_lines), sigterm_as_interrupt():
        run = _BatchRun(settings, client, output, failures_path, state, options)
        return run.execute(source, total_lines)


def collect_job(
    state: Path,
    *,
    output: Path | None,
    failures: Path | None,
    base_url: str | None,
    deadline: float,
    wait: bool,
    progress: bool,
    verbose: int,
) -> int:
    """``batch collect STATE``: wait for the job (or look once) and write its outcomes.

    OUT, the failures file and the server default to the job's record; IN is not read.

    Raises:
        UsageError: no job there, or no record of its inputs.
    """
    if not state.exists():
        raise UsageError(f"no batch job state at {state}")
    record = _read_record(state)
    if record is None:
        raise UsageError(
            f"{state} has no record of its inputs ({record_path_for(state).name}): it was not "
            "made by the command line; collect it with BatchJob.open() in Python"
        )
    out = output or Path(record.output)
    if failures is None:
        failures = failures_path_for(out) if output is not None else Path(record.failures)
    settings = JobSettings(
        kind=record.command,
        input=record.input,
        output=out,
        failures=failures,
        resume=True,
        base_url=server_of(record, base_url),
        model=record.model,
        concurrency=1,
        deadline=deadline,
        rpm=None,
        tpm=None,
        progress=progress,
        verbose=verbose,
        via="batch",
        state=state,
        wait=wait,
    )
    output, failures_path = check_paths(settings)
    client = make_client(settings)
    with client, sigterm_as_interrupt():
        run = _BatchRun(settings, client, output, failures_path, state, None)
        return run.execute(None, None, record=record)


class _BatchRun:
    """One run of a Batch API job over files: the job, its record, and what becomes of it."""

    def __init__(
        self,
        settings: JobSettings,
        client: ResilientClient,
        output: Path,
        failures_path: Path,
        state: Path,
        options: BatchJobOptions | None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.output = output
        self.failures_path = failures_path
        self.state = state
        self.options = options
        self.console = Console()
        self.tally = Tally()
        self.reasons = Reasons()
        self.started = time.monotonic()
        self.prog = _prog(settings.kind)
        self.job: BatchJob | None = None
        self.result_in = False  # the job's result was assembled (the batches have ended)
        self.cancelled = False

    @property
    def model(self) -> str:
        if self.settings.model:
            return self.settings.model
        embed = self.settings.kind == "embed"
        return self.client.embedding_model if embed else self.client.chat_model

    @property
    def request(self) -> dict[str, Any]:
        settings = self.settings
        if settings.kind == "embed":
            return {"dimensions": settings.dimensions}
        return {"instructions": settings.instructions, "max_words": settings.max_words}

    def execute(
        self, source: IO[bytes] | None, total_lines: int | None, *, record: JobRecord | None = None
    ) -> int:
        report = Report(
            kind=self.settings.kind,
            tally=self.tally,
            output=self.output,
            failures_path=self.failures_path,
            elapsed=0.0,
            client_stats=self.client.stats,
            reasons=self.reasons,
        )
        with contextlib.ExitStack() as files:
            if self.state.exists() and not self.settings.resume:
                raise UsageError(
                    f"{self.state} holds a batch job: --no-resume would leave its batches "
                    f"running unseen. Cancel it first (resilient-llm batch cancel {self.state}), "
                    "or give another --state"
                )
            results, failures, done = open_outputs(
                self.settings, self.output, self.failures_path, self.console, files
            )
            outcomes = Outcomes(
                value_field=self.settings.value_field,
                results=results,
                failures=failures,
                tally=self.tally,
                reasons=self.reasons,
                console=self.console,
                verbose=self.settings.verbose,
            )
            try:
                if record is None:
                    assert source is not None
                    made = self._make(source, done, failures)
                else:
                    made = self._reopen(record, failures)
                if made is None:  # nothing to send: every id is in OUT already
                    report.elapsed = time.monotonic() - self.started
                    self.console.say(render_summary(report))
                    return self._exit_status(report)
                job, record = made
                status = self._drive(job, record, outcomes, done, total_lines, report)
            except WriteFailed as exc:
                role = "OUT" if exc.path == self.output else "the failures file"
                report.stop = f"cannot write {role}: {describe(exc.error)}"
                status = None
            if status is not None:
                return status
        report.elapsed = time.monotonic() - self.started
        report.client_stats = self.client.stats
        self.console.say(render_summary(report))
        self._after_summary(report)
        return self._exit_status(report)

    # -- making or resuming the job (no network) -----------------------------------------------

    def _make(
        self, source: IO[bytes], done: set[str], failures: JsonlWriter
    ) -> tuple[BatchJob, JobRecord] | None:
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
        job = _open_state(self.client, self.state)
        record = _read_record(self.state)
        if record is None or record.job_id != job.id:
            if _never_sent(job.progress()):  # killed before its record was written
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
        keys = {_key(ident) for ident, _ in record.ids}
        added = 0
        for position, text in enumerate(inputs.texts()):
            ident, _ = inputs.take(position)
            key = _key(ident)
            if key not in keys:
                self.tally.skipped += 1
                added += key not in done
                continue
            want = next(expected, None)
            if want is None or _key(want[0]) != key:
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
        settings = self.settings
        try:
            if settings.kind == "embed":
                return BatchJob.embeddings(
                    self.client,
                    texts,
                    state=self.state,
                    model=settings.model,
                    dimensions=settings.dimensions,
                    options=self.options,
                )
            return BatchJob.summaries(
                self.client,
                texts,
                state=self.state,
                instructions=settings.instructions,
                max_words=settings.max_words,
                model=settings.model,
                options=self.options,
            )
        except (TypeError, ValueError) as exc:
            if resuming is not None:  # the library's check of the inputs against the job
                raise self._changed(resuming) from None
            raise UsageError(describe(exc)) from None

    def _reopen(
        self, record: JobRecord, failures: JsonlWriter
    ) -> tuple[BatchJob, JobRecord] | None:
        """``batch collect``: the job and its record; IN's counts and malformed lines from it."""
        job = _open_state(self.client, self.state)
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

    # -- running it ----------------------------------------------------------------------------

    def _drive(
        self,
        job: BatchJob,
        record: JobRecord,
        outcomes: Outcomes,
        done: set[str],
        total_lines: int | None,
        report: Report,
    ) -> int | None:
        """Submit, wait (or look once), write the outcomes. An exit status when there is no
        summary to print (pending, or a server without a Batch API), else ``None``."""
        settings = self.settings
        bar = make_bar(settings.progress, total_lines, settings.kind)
        self.console.bar = bar
        self.job = job
        try:
            with route_logs(self.console, settings.verbose):
                if settings.wait:
                    with _Watch(job, self.console, bar, base=self.tally.resolved()):
                        result = job.wait()
                else:
                    progress = job.submit()
                    if not progress.finished:
                        return self._pending(job, progress)
                    collected = job.collect()
                    assert collected is not None
                    result = collected
                self.result_in = True
                self._write(result, record, outcomes, done)
                report.stats = result.stats
                self._finished(job)
        except BatchAPIUnsupported as exc:
            self._unsupported(job, exc)
            return EXIT_STOPPED
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            report.exit_status = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except WriteFailed:
            raise
        except Exception as exc:  # the job itself stopped (a rejected key, the network...)
            report.stop = describe(exc)
        finally:
            if bar is not None:
                bar.update(self.tally.resolved() - bar.n)
                bar.close()
            self.console.bar = None
        return None

    def _write(
        self, result: BatchResult[Any], record: JobRecord, outcomes: Outcomes, done: set[str]
    ) -> None:
        failed = {failure.index: failure for failure in result.failures}
        for index, (ident, line) in enumerate(record.ids):
            if _key(ident) in done:
                self.tally.skipped += 1  # written by an earlier run that stopped half-way
                continue
            failure = failed.get(index)
            if failure is None:
                outcomes.succeeded(ident, result.values[index])
            else:
                # A cancelled job's unsent inputs are one kind of failure, not one line each.
                unsent_input = failure.error_type != "BatchLineError"
                outcomes.failed(ident, line, failure, report_unsent=unsent_input)

    def _finished(self, job: BatchJob) -> None:
        self.cancelled = job.progress().cancelled
        try:
            remove_job_files(self.state)
        except OSError as exc:
            self.console.say(f"could not remove the finished job's files: {describe(exc)}")
        else:
            self.console.say(f"batch job {job.id}: finished; its state {self.state} is removed")

    def _pending(self, job: BatchJob, progress: JobProgress) -> int:
        state = self.state
        self.console.say(
            f"{self.prog}: batch job {job.id} submitted: {progress.done:,} of "
            f"{progress.total:,} inputs done; batches: {_shards_text(progress)}\n"
            f"  state  {state}\n"
            "the batches run on the server: run the same command again later to collect the "
            f"results (or: resilient-llm batch collect {state}); resilient-llm batch status "
            f"{state} shows them"
        )
        return EXIT_PENDING

    def _unsupported(self, job: BatchJob, exc: BatchAPIUnsupported) -> None:
        if _never_sent(job.progress()):
            with contextlib.suppress(OSError):
                remove_job_files(self.state)
        self.console.say(
            f"{self.prog}: {exc.base_url} has no Batch API (HTTP {exc.status}); servers such as "
            "vLLM and Ollama serve only live requests: run the same command without --via batch"
        )

    def _after_summary(self, report: Report) -> None:
        state = self.state
        if self.job is None:
            return
        if report.stats is None and self.result_in:
            self.console.say(
                f"batch job {self.job.id} is finished on the server: run the same command "
                "again to write the rest of its results"
            )
        elif report.stats is None:
            self.console.say(
                f"the batches of job {self.job.id} keep running on the server: run the same "
                f"command again to collect them (resilient-llm batch status {state} shows them, "
                f"resilient-llm batch cancel {state} stops them)"
            )
        elif self.cancelled:
            self.console.say(
                "the job was cancelled: the inputs it did not run are in the failures file "
                "(BatchLineError); running the command again sends them in a new job"
            )

    def _exit_status(self, report: Report) -> int:
        if report.exit_status is not None:
            return report.exit_status
        if report.stop is not None:
            return EXIT_STOPPED
        return EXIT_FAILURES if self.tally.failed or self.tally.malformed else EXIT_OK


class _Watch:
    """A running job's progress, read from its state file (no network) while `wait` runs: a
    bar on a terminal, else a line when it moved, at most every :data:`LINE_EVERY` seconds."""

    PERIOD = 0.5

    def __init__(self, job: BatchJob, console: Console, bar: Any, *, base: int) -> None:
        self._job = job
        self._console = console
        self._bar = bar
        self._base = base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-progress", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last: tuple[int, str] | None = None
        shown_at = -LINE_EVERY
        while True:
            try:
                progress = self._job.progress()
            except Exception as exc:  # the display only; the job goes on
                self._console.say(f"cannot show the job's progress: {describe(exc)}")
                return
            now = (progress.done, _shards_text(progress))
            if self._bar is not None:
                self._bar.update(self._base + progress.done - self._bar.n)
                self._bar.set_postfix_str(now[1], refresh=False)
            elif last is None:
                last = now  # the job as it was made or left: nothing happened yet
            elif now != last and time.monotonic() - shown_at >= LINE_EVERY:
                self._console.say(
                    f"batch job {progress.job_id}: {progress.done:,} of {progress.total:,} "
                    f"inputs done; batches: {now[1]}"
                )
                last, shown_at = now, time.monotonic()
            if self._stop.wait(self.PERIOD):
                return


# --- batch status / cancel -------------------------------------------------------------------


def job_status(state: Path, *, base_url: str | None, deadline: float) -> int:
    """``batch status STATE``: the job's shards from its state file, running batches from the
    server.

    Raises:
        UsageError: no job there.
    """
    record = _read_record(state) if state.exists() else None
    client = _client_for(state, record, base_url, deadline)
    with client:
        job = _open_state(client, state)
        shards = JobStore(state).load().shards
        progress = job.progress()
        lines = [f"batch job {job.id} ({job.kind}), state {state}"]
        if record is not None:
            lines.append(f"  {record.command}: {record.input} → {record.output}")
        flags = " (cancelled)" if progress.cancelled else ""
        lines.append(
            f"  {progress.total:,} inputs: {progress.done:,} done ({progress.succeeded:,} "
            f"succeeded, {progress.failed:,} failed){flags}"
        )
        lines.append(
            f"  {'shard':>5} {'inputs':>8}  {'batch':<32} {'status':<12} "
            f"{'completed':>9} {'failed':>7} {'total':>7}"
        )
        for shard in shards:
            status = shard.batch_status or shard.stage
            counts = ("", "", "")
            if shard.stage == "collected":
                counts = (f"{shard.succeeded:,}", f"{shard.failed:,}", f"{shard.size:,}")
                status = f"{status}, collected" if shard.batch_status else "not sent"
            elif shard.batch_id is not None:
                batch = _retrieve(client, shard.batch_id)
                status = batch.status
                made = batch.request_counts
                if made is not None:
                    counts = (f"{made.completed:,}", f"{made.failed:,}", f"{made.total:,}")
            else:
                status = "not sent yet"
            lines.append(
                f"  {shard.shard:>5} {shard.size:>8,}  {shard.batch_id or '-':<32} "
                f"{status:<12} {counts[0]:>9} {counts[1]:>7} {counts[2]:>7}"
            )
        if progress.finished:
            lines.append(f"finished: collect the results with resilient-llm batch collect {state}")
        elif progress.cancelled:
            lines.append(
                "cancelled: its batches are stopping; collect what there is with "
                f"resilient-llm batch collect {state}"
            )
        else:
            lines.append(
                f"running: collect the results when it is done with resilient-llm batch collect "
                f"{state} (it waits), or run the job's command again"
            )
    print("\n".join(lines), flush=True)  # the command's output, on stdout
    return EXIT_OK


def cancel_job(state: Path, *, base_url: str | None, deadline: float) -> int:
    """``batch cancel STATE``: cancel every batch of the job; nothing more is sent.

    Raises:
        UsageError: no job there.
    """
    record = _read_record(state) if state.exists() else None
    client = _client_for(state, record, base_url, deadline)
    console = Console()
    with client:
        job = _open_state(client, state)
        before = job.progress()
        if before.finished and not before.cancelled:
            console.say(
                f"batch job {job.id} is finished: nothing to cancel; collect its results with "
                f"resilient-llm batch collect {state}"
            )
            return EXIT_OK
        progress = job.cancel()
    console.say(
        f"batch job {job.id} cancelled: nothing more is sent, and its running batches stop. "
        "Inputs that did not run become failures (never sent again); answers already in are "
        f"kept ({progress.total:,} inputs).\n"
        f"collect them: resilient-llm batch collect {state}"
    )
    return EXIT_OK


def _retrieve(client: ResilientClient, batch_id: str) -> Any:
    def batches_retrieve(official: Any) -> Any:
        return official.batches.retrieve(batch_id)

    return client.call(batches_retrieve)


def server_of(record: JobRecord | None, base_url: str | None) -> str | None:
    """The server of a job: ``--base-url``, else the one its record names (the batches live
    there), else ``$OPENAI_BASE_URL``."""
    if base_url:
        return base_url
    if record is not None:
        return record.base_url
    return os.environ.get("OPENAI_BASE_URL") or None


def _client_for(
    state: Path, record: JobRecord | None, base_url: str | None, deadline: float
) -> ResilientClient:
    if not state.exists():
        raise UsageError(f"no batch job state at {state}")
    settings = JobSettings(
        kind="batch",
        input=str(state),
        output=state,
        failures=None,
        resume=True,
        base_url=server_of(record, base_url),
        model=None,
        concurrency=1,
        deadline=deadline,
        rpm=None,
        tpm=None,
        progress=False,
        verbose=0,
    )
    return make_client(settings)
