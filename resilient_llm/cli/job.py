"""One ``embed`` or ``summarize`` job over files with live requests: check everything, then run
the batch.

Before anything is sent the settings, files and client are checked (:mod:`.run`), and the
batch options by the library. Then the library's batch stream runs over the input lines, and
each outcome is written as it finishes: results to OUT, failures to the failures file. Ctrl-C
and SIGTERM close the files whole; a re-run skips the ids already in OUT.

Which errors end a batch is the library's call: the batch stops itself, fails the inputs it did
not send with that error, and names it in :attr:`~resilient_llm.BatchResult.stopped_by`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import IO, Any

from .._batch.results import ItemFailure
from .._batch.streams import BatchStream
from .._messages import describe
from .console import Report, render_summary, route_logs, silence_logs
from .inputs import InputLines
from .io import WriteFailed
from .run import JobSettings, RunBase, check_paths, make_client, open_input, open_outputs
from .status import UsageError, interrupt_status, sigterm_as_interrupt

__all__ = ["run_job"]


def run_job(settings: JobSettings) -> int:
    """Run one job; returns the exit status.

    Raises:
        UsageError: a problem found before anything was sent.
        KeyboardInterrupt: Ctrl-C before the batch started (nothing to save).
    """
    output, failures_path = check_paths(settings)
    client = make_client(settings)
    with client, open_input(settings.input) as (source, total_lines), sigterm_as_interrupt():
        return _Run(settings, client, output, failures_path).execute(source, total_lines)


class _Run(RunBase):
    """One run of a job: the files, the batch stream, and what each outcome becomes."""

    def execute(self, source: IO[bytes], total_lines: int | None) -> int:
        with contextlib.ExitStack() as files:
            results, failures, done = open_outputs(
                self.settings, self.output, self.failures_path, self.console, files
            )
            self.outcomes = self.new_outcomes(results, failures)
            inputs = InputLines(
                source, done, tally=self.tally, console=self.console, failures=failures
            )
            stream = self._open_stream(inputs.texts())
            report = self._consume(stream, inputs, total_lines)
        self.console.say(render_summary(report))
        return self.exit_status(report)

    # -- before anything is sent -------------------------------------------------------------

    def _open_stream(self, texts: Iterator[object]) -> BatchStream[Any]:
        settings = self.settings
        common: dict[str, Any] = {
            "max_concurrency": settings.concurrency,
            "requests_per_minute": settings.rpm,
            "tokens_per_minute": settings.tpm,
            "progress": False,
        }
        if settings.model:
            common["model"] = settings.model
        try:
            if settings.kind == "embed":
                if settings.dimensions:
                    common["dimensions"] = settings.dimensions
                return self.client.iter_embed_batch(
                    texts, batch_size=settings.batch_size, too_long=settings.too_long, **common
                )
            return self.client.iter_summarize_batch(
                texts, instructions=settings.instructions, max_words=settings.max_words, **common
            )
        except (TypeError, ValueError) as exc:  # the library refused an option: nothing sent
            raise UsageError(describe(exc)) from None

    # -- the batch ---------------------------------------------------------------------------

    def _consume(
        self,
        stream: BatchStream[Any],
        inputs: InputLines,
        total_lines: int | None,
    ) -> Report:
        bar = self.open_bar(total_lines)
        started = time.monotonic()
        report = self.new_report()
        with route_logs(self.console, self.settings.verbose):
            try:
                with stream:
                    for index, outcome in stream:
                        self._record(index, outcome, inputs, bar)
                    result = stream.result()
                report.stats = result.stats
                report.stopped_by = result.stopped_by
            except KeyboardInterrupt as exc:
                report.exit_status = interrupt_status(exc)
            except WriteFailed as exc:
                report.stop = self.cannot_write(exc)
            except Exception as exc:  # raised by the batch itself or the input, not by one input
                report.stop = describe(exc)
            finally:
                if report.stats is None:  # stopped early: requests in flight were abandoned
                    silence_logs()
                self.close_bar(bar)
        report.elapsed = time.monotonic() - started
        report.client_stats = self.client.stats
        return report

    def _record(
        self,
        index: int,
        outcome: object,
        inputs: InputLines,
        bar: Any,
    ) -> None:
        ident, line = inputs.take(index)
        if isinstance(outcome, ItemFailure):
            self.outcomes.failed(ident, line, outcome)
            if bar is not None:
                bar.set_postfix(failed=self.tally.failed + self.tally.malformed, refresh=False)
        else:
            self.outcomes.succeeded(ident, outcome)
        if bar is not None:
            bar.update(self.tally.resolved() - bar.n)
