"""Jobs through OpenAI's Batch API from the command line: ``embed``/``summarize --via batch``,
and ``batch collect STATE`` (:mod:`.batch_commands`), which runs a job the same way.

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

Ctrl-C, SIGTERM and stops leave the batches running on the server, and say how to go on. The
job is made, resumed or reopened by :mod:`.batch_make` (no network); this module runs it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import IO, Any

from .._batch.results import BatchResult
from .._messages import describe
from ..batch_api import BatchAPIUnsupported, BatchJob, JobProgress
from .batch_make import (
    JobMaker,
    check_settings,
    job_options,
    never_sent,
    record_key,
    state_path,
)
from .batch_progress import Watch, shards_text
from .batch_record import JobRecord, remove_job_files
from .console import Report, render_summary, route_logs
from .io import WriteFailed
from .outcomes import Outcomes
from .run import JobSettings, check_paths, make_client, open_input, open_outputs
from .status import EXIT_PENDING, EXIT_STOPPED, UsageError, interrupt_status, sigterm_as_interrupt

__all__ = ["BatchRun", "run_batch_job"]


def run_batch_job(settings: JobSettings) -> int:
    """``embed``/``summarize --via batch``: make or resume the job, wait, write the outcomes.

    Raises:
        UsageError: a problem found before anything was sent.
        KeyboardInterrupt: Ctrl-C before the job was made (nothing to save).
    """
    check_settings(settings)
    output, failures_path = check_paths(settings)
    state = state_path(settings, output, failures_path)
    options = job_options(settings)
    client = make_client(settings)
    with client, open_input(settings.input) as (source, total_lines), sigterm_as_interrupt():
        run = BatchRun(settings, client, output, failures_path, state, options)
        return run.execute(source, total_lines)


@dataclass
class BatchRun(JobMaker):
    """One run of a Batch API job over files: the job, its record, and what becomes of it."""

    job: BatchJob | None = field(default=None, init=False)
    # The job's result was assembled (the batches have ended).
    result_in: bool = field(default=False, init=False)
    cancelled: bool = field(default=False, init=False)
    started: float = field(default_factory=time.monotonic, init=False)

    @property
    def prog(self) -> str:
        return f"resilient-llm {self.settings.kind}"

    def execute(
        self, source: IO[bytes] | None, total_lines: int | None, *, record: JobRecord | None = None
    ) -> int:
        report = self.new_report()
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
            outcomes = self.new_outcomes(results, failures)
            try:
                if record is None:
                    assert source is not None
                    made = self.make(source, done, failures)
                else:
                    made = self.reopen(record, failures)
                if made is None:  # nothing to send: every id is in OUT already
                    report.elapsed = time.monotonic() - self.started
                    self.console.say(render_summary(report))
                    return self.exit_status(report)
                job, record = made
                status = self._drive(job, record, outcomes, done, total_lines, report)
            except WriteFailed as exc:
                report.stop = self.cannot_write(exc)
                status = None
            if status is not None:
                return status
        report.elapsed = time.monotonic() - self.started
        report.client_stats = self.client.stats
        self.console.say(render_summary(report))
        self._after_summary(report)
        return self.exit_status(report)

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
        bar = self.open_bar(total_lines)
        self.job = job
        try:
            with route_logs(self.console, settings.verbose):
                if settings.wait:
                    with Watch(job, self.console, bar, base=self.tally.resolved()):
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
            report.exit_status = interrupt_status(exc)
        except WriteFailed:
            raise
        except Exception as exc:  # the job itself stopped (a rejected key, the network...)
            report.stop = describe(exc)
        finally:
            self.close_bar(bar)
        return None

    def _write(
        self, result: BatchResult[Any], record: JobRecord, outcomes: Outcomes, done: set[str]
    ) -> None:
        failed = {failure.index: failure for failure in result.failures}
        for index, (ident, line) in enumerate(record.ids):
            if record_key(ident) in done:
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
            f"{progress.total:,} inputs done; batches: {shards_text(progress)}\n"
            f"  state  {state}\n"
            "the batches run on the server: run the same command again later to collect the "
            f"results (or: resilient-llm batch collect {state}); resilient-llm batch status "
            f"{state} shows them"
        )
        return EXIT_PENDING

    def _unsupported(self, job: BatchJob, exc: BatchAPIUnsupported) -> None:
        if never_sent(job.progress()):
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
