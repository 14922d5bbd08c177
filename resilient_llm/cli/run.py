"""What every job run shares, live or through the Batch API: its settings, the checks before
anything is sent, its files, and the run's counts, outcomes, summary and exit status.

Before anything is sent: the paths, the key, the input, OUT and the failures file (both opened
for writing) are checked; a problem is a :class:`~.status.UsageError`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import openai

from .._client import ResilientClient
from .._messages import describe
from .console import Console, Reasons, Report, Tally, make_bar
from .io import JsonlWriter, WriteFailed, count_lines, failures_path_for, scan_output
from .outcomes import Outcomes
from .status import EXIT_FAILURES, EXIT_OK, EXIT_STOPPED, UsageError

__all__ = [
    "JobSettings",
    "RunBase",
    "check_paths",
    "make_client",
    "open_input",
    "open_outputs",
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


@dataclass
class RunBase:
    """One run of a job over files: its settings, client and files, and what it counts.

    Args:
        settings: what the command line asked.
        client: the client the run sends through.
        output: OUT.
        failures_path: the failures file.
    """

    settings: JobSettings
    client: ResilientClient
    output: Path
    failures_path: Path
    console: Console = field(default_factory=Console, init=False)
    tally: Tally = field(default_factory=Tally, init=False)
    reasons: Reasons = field(default_factory=Reasons, init=False)

    def new_report(self) -> Report:
        """The run's summary, to fill in as it goes."""
        return Report(
            kind=self.settings.kind,
            tally=self.tally,
            output=self.output,
            failures_path=self.failures_path,
            elapsed=0.0,
            client_stats=self.client.stats,
            reasons=self.reasons,
        )

    def new_outcomes(self, results: JsonlWriter, failures: JsonlWriter) -> Outcomes:
        """Where the run's outcomes go: `results` (OUT) and `failures`."""
        return Outcomes(
            value_field=self.settings.value_field,
            results=results,
            failures=failures,
            tally=self.tally,
            reasons=self.reasons,
            console=self.console,
            verbose=self.settings.verbose,
        )

    def cannot_write(self, exc: WriteFailed) -> str:
        """Why the run stopped when OUT or the failures file took no more."""
        role = "OUT" if exc.path == self.output else "the failures file"
        return f"cannot write {role}: {describe(exc.error)}"

    def open_bar(self, total_lines: int | None) -> Any:
        """The progress bar (``None`` without one), shown above what the console says."""
        settings = self.settings
        bar = make_bar(settings.progress, total_lines, settings.kind)
        self.console.bar = bar
        return bar

    def close_bar(self, bar: Any) -> None:
        """The bar brought up to the outcomes written, then closed."""
        if bar is not None:
            bar.update(self.tally.resolved() - bar.n)
            bar.close()
        self.console.bar = None

    def exit_status(self, report: Report) -> int:
        """The exit status the run's summary calls for."""
        if report.exit_status is not None:
            return report.exit_status
        if report.stopped_by is not None or report.stop is not None:
            return EXIT_STOPPED
        return EXIT_FAILURES if self.tally.failed or self.tally.malformed else EXIT_OK
