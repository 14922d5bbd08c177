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
from .._messages import describe
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
from .outcomes import Outcomes
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

__all__ = [
    "JobSettings",
    "check_paths",
    "make_client",
    "open_input",
    "open_outputs",
    "run_job",
]

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
    # --via batch (see resilient_llm.cli.batch)
    via: Literal["live", "batch"] = "live"
    state: Path | None = None
    wait: bool = True
    poll_interval: float = 5.0
    max_in_flight: int | None = None
    lines_per_batch: int = 50_000

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


def open_outputs(
    settings: JobSettings,
    output: Path,
    failures_path: Path,
    console: Console,
    files: contextlib.ExitStack,
) -> tuple[JsonlWriter, JsonlWriter, set[str]]:
    """OUT opened for appending (an incomplete last line cut off), the failures file started
    afresh (failures of an earlier run are tried again), and the ids OUT already holds.

    Both files are closed when `files` closes; an empty failures file is removed then.

    Raises:
        UsageError: a file cannot be written.
    """
    done: set[str] = set()
    try:
        if settings.resume:
            resume = scan_output(output)
            if resume.cut_bytes:
                console.say(
                    f"{output}: removed an incomplete last line ({resume.cut_bytes} bytes) "
                    "left by an interrupted run; that input is done again"
                )
            if resume.unreadable:
                console.say(f"{output}: {resume.unreadable} unreadable lines ignored")
            done = resume.done
        else:
            output.unlink(missing_ok=True)
        results = JsonlWriter(output)
        results.open()
    except OSError as exc:
        raise UsageError(f"cannot write OUT: {describe(exc)}") from None
    files.callback(results.close)
    # Failures of an earlier run are tried again now; the file gets this run's.
    failures = JsonlWriter(failures_path, truncate=True)
    try:
        failures.open()
    except OSError as exc:
        raise UsageError(f"cannot write the failures file: {describe(exc)}") from None

    def remove_if_empty() -> None:
        try:
            failures.remove_if_empty()
        except OSError as exc:
            console.say(f"could not remove the empty failures file: {describe(exc)}")

    files.callback(remove_if_empty)
    return results, failures, done


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
            results, failures, done = open_outputs(
                self.settings, self.output, self.failures_path, self.console, files
            )
            self.outcomes = Outcomes(
                value_field=self.settings.value_field,
                results=results,
                failures=failures,
                tally=self.tally,
                reasons=self.reasons,
                console=self.console,
                verbose=self.settings.verbose,
            )
            inputs = InputLines(
                source, done, tally=self.tally, console=self.console, failures=failures
            )
            stream = self._open_stream(inputs.texts())
            report = self._consume(stream, inputs, total_lines)
        self.console.say(render_summary(report))
        return self._exit_status(report)

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
                        self._record(index, outcome, inputs, bar)
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

    def _exit_status(self, report: Report) -> int:
        if report.exit_status is not None:
            return report.exit_status
        if report.stopped_by is not None or report.stop is not None:
            return EXIT_STOPPED
        return EXIT_FAILURES if self.tally.failed or self.tally.malformed else EXIT_OK
