"""One ``embed`` or ``summarize`` job over files: check everything, then run the batch.

Before anything is sent: the paths, the key, the input, OUT and the failures file (both opened
for writing) and the batch options are checked; a problem is a :class:`~.status.UsageError`.
Then the library's batch stream runs over the input lines, and each outcome is written as it
finishes: results to OUT, failures to the failures file. Ctrl-C and SIGTERM close the files
whole; a re-run skips the ids already in OUT.

Which errors end a batch is the library's call: the batch stops itself, fails the inputs it did
not send with that error, and names it in :attr:`~resilient_llm.BatchResult.stopped_by`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import openai

from .._batch.results import ItemFailure
from .._batch.streams import BatchStream
from .._client import ResilientClient
from .._messages import describe, one_line
from .console import (
    Console,
    Reasons,
    Report,
    Tally,
    make_bar,
    render_summary,
    route_logs,
    silence_logs,
)
from .inputs import InputLines
from .io import (
    JsonlWriter,
    WriteFailed,
    count_lines,
    failures_path_for,
    scan_output,
)
from .status import (
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_TERMINATED,
    Terminated,
    UsageError,
    sigterm_as_interrupt,
)

__all__ = ["JobSettings", "run_job"]

NO_KEY = (
    "OPENAI_API_KEY is not set. Export your key (export OPENAI_API_KEY=...), or point "
    "--base-url at an OpenAI-compatible server of your own (vLLM, Ollama, a proxy), which "
    "needs none. `resilient-llm demo` runs with no key at all."
)


@dataclass(frozen=True)
class JobSettings:
    """What the command line asked for (see ``resilient-llm embed --help``)."""

    kind: str  # "embed" or "summarize"
    input: str  # a path, or "-" for stdin
    output: Path
    failures: Path | None
    resume: bool
    base_url: str | None
    model: str | None
    concurrency: int
    deadline: float
    rpm: int | None
    tpm: int | None
    progress: bool
    verbose: int
    batch_size: int | None = None
    dimensions: int | None = None
    too_long: Literal["fail", "truncate"] = "fail"
    instructions: str | None = None
    max_words: int | None = None

    @property
    def value_field(self) -> str:
        return "embedding" if self.kind == "embed" else "summary"


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


def check_paths(settings: JobSettings) -> tuple[Path, Path]:
    """OUT and the failures file, refused when they cannot be right (nothing is written)."""
    output = settings.output
    failures = settings.failures or failures_path_for(output)
    for path, name in ((output, "OUT"), (failures, "the failures file")):
        if not path.parent.is_dir():
            raise UsageError(f"the folder of {name} does not exist: {path.parent}")
    if output.is_dir():
        raise UsageError(f"OUT is a folder: {output}")
    if settings.input != "-":
        source = Path(settings.input).resolve()
        for path in (output, failures):
            if path.resolve() == source:
                raise UsageError(f"IN and {path} are the same file")
    if failures.resolve() == output.resolve():
        raise UsageError("OUT and the failures file are the same file")
    return output, failures


def make_client(settings: JobSettings) -> ResilientClient:
    """The client; the key rules are the library's: no key is needed for a server of your own."""
    key = os.environ.get("OPENAI_API_KEY") or None
    try:
        return ResilientClient(
            api_key=key,
            base_url=settings.base_url,
            deadline=settings.deadline,
            max_concurrency=settings.concurrency,
        )
    except openai.OpenAIError:
        if key is not None:
            raise
        raise UsageError(NO_KEY) from None


@contextlib.contextmanager
def open_input(name: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The input stream and its line count when it is a file (for the progress bar)."""
    if name == "-":
        yield sys.stdin.buffer, None
        return
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"input file not found: {name}")
    try:
        lines = count_lines(path)
        stream = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read IN: {describe(exc)}") from None
    with stream:
        yield stream, lines


def failure_record(
    ident: object, line: int, failure: ItemFailure, *, not_sent: bool
) -> dict[str, object]:
    """One line of the failures file."""
    record: dict[str, object] = {
        "id": ident,
        "line": line,
        "error_type": failure.error_type,
        "message": failure.message,
        "status": failure.status,
        "attempts": failure.attempts,
    }
    if not_sent:
        record["not_sent"] = True
    return record


class _Run:
    """One run of a job: the files, the batch stream, and what each outcome becomes."""

    def __init__(
        self, settings: JobSettings, client: ResilientClient, output: Path, failures_path: Path
    ) -> None:
        self.settings = settings
        self.client = client
        self.output = output
        self.failures_path = failures_path
        self.console = Console()
        self.tally = Tally()
        self.reasons = Reasons()

    def execute(self, source: IO[bytes], total_lines: int | None) -> int:
        with contextlib.ExitStack() as files:
            results, failures, done = self._open_outputs(files)
            inputs = InputLines(
                source, done, tally=self.tally, console=self.console, failures=failures
            )
            stream = self._open_stream(inputs.texts())
            report = self._consume(stream, inputs, results, failures, total_lines)
        self.console.say(render_summary(report))
        return self._exit_status(report)

    # -- before anything is sent -------------------------------------------------------------

    def _open_outputs(
        self, files: contextlib.ExitStack
    ) -> tuple[JsonlWriter, JsonlWriter, set[str]]:
        output = self.output
        done: set[str] = set()
        try:
            if self.settings.resume:
                resume = scan_output(output)
                if resume.cut_bytes:
                    self.console.say(
                        f"{output}: removed an incomplete last line ({resume.cut_bytes} bytes) "
                        "left by an interrupted run; that input is done again"
                    )
                if resume.unreadable:
                    self.console.say(f"{output}: {resume.unreadable} unreadable lines ignored")
                done = resume.done
            else:
                output.unlink(missing_ok=True)
            results = JsonlWriter(output)
            results.open()
        except OSError as exc:
            raise UsageError(f"cannot write OUT: {describe(exc)}") from None
        files.callback(results.close)
        # Failures of an earlier run are tried again now; the file gets this run's.
        failures = JsonlWriter(self.failures_path, truncate=True)
        try:
            failures.open()
        except OSError as exc:
            raise UsageError(f"cannot write the failures file: {describe(exc)}") from None
        files.callback(self._remove_if_empty, failures)
        return results, failures, done

    def _remove_if_empty(self, failures: JsonlWriter) -> None:
        try:
            failures.remove_if_empty()
        except OSError as exc:
            self.console.say(f"could not remove the empty failures file: {describe(exc)}")

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
        results: JsonlWriter,
        failures: JsonlWriter,
        total_lines: int | None,
    ) -> Report:
        settings = self.settings
        bar = make_bar(settings.progress, total_lines, settings.kind)
        self.console.bar = bar
        started = time.monotonic()
        report = Report(
            kind=settings.kind,
            tally=self.tally,
            output=self.output,
            failures_path=self.failures_path,
            elapsed=0.0,
            client_stats=self.client.stats,
            reasons=self.reasons,
        )
        with route_logs(self.console, settings.verbose):
            try:
                with stream:
                    for index, outcome in stream:
                        self._record(index, outcome, inputs, results, failures, bar)
                    result = stream.result()
                report.stats = result.stats
                report.stopped_by = result.stopped_by
            except KeyboardInterrupt as exc:
                terminated = isinstance(exc, Terminated)
                report.exit_status = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
            except WriteFailed as exc:
                role = "OUT" if exc.path == self.output else "the failures file"
                report.stop = f"cannot write {role}: {describe(exc.error)}"
            except Exception as exc:  # raised by the batch itself or the input, not by one input
                report.stop = describe(exc)
            finally:
                if report.stats is None:  # stopped early: requests in flight were abandoned
                    silence_logs()
                if bar is not None:
                    bar.update(self.tally.resolved() - bar.n)
                    bar.close()
                self.console.bar = None
        report.elapsed = time.monotonic() - started
        report.client_stats = self.client.stats
        return report

    def _record(
        self,
        index: int,
        outcome: object,
        inputs: InputLines,
        results: JsonlWriter,
        failures: JsonlWriter,
        bar: Any,
    ) -> None:
        ident, line = inputs.take(index)
        if isinstance(outcome, ItemFailure):
            self._failed(ident, line, outcome, failures)
            if bar is not None:
                bar.set_postfix(failed=self.tally.failed + self.tally.malformed, refresh=False)
        else:
            results.write({"id": ident, self.settings.value_field: outcome})
            self.tally.succeeded += 1
        if bar is not None:
            bar.update(self.tally.resolved() - bar.n)

    def _failed(
        self, ident: object, line: int, failure: ItemFailure, failures: JsonlWriter
    ) -> None:
        # Failed unsent with the error that ended the batch: nothing wrong with this input.
        not_sent = failure.not_sent
        failures.write(failure_record(ident, line, failure, not_sent=not_sent))
        self.tally.failed += 1
        if not_sent:
            self.tally.not_sent += 1
            return
        first_of_its_kind = self.reasons.add(failure, line, ident)
        if first_of_its_kind and self.settings.verbose >= 2:
            where = f"line {line}, id {json.dumps(ident)}"
            self.console.say(
                f"the first {failure.error_type} ({where}):\n{failure.traceback.rstrip()}"
            )
        if failure.attempts == 0:  # refused by the library's input checks, never sent
            text = one_line(failure.error_type, failure.message, status=failure.status)
            self.console.report_line(
                f"line {line} (id {json.dumps(ident)}): {text}; not sent", self.failures_path
            )

    def _exit_status(self, report: Report) -> int:
        if report.exit_status is not None:
            return report.exit_status
        if report.stopped_by is not None or report.stop is not None:
            return EXIT_STOPPED
        return EXIT_FAILURES if self.tally.failed or self.tally.malformed else EXIT_OK
