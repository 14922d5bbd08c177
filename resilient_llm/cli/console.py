"""What the command line says on stderr: messages, the library's log lines, the progress bar, and
the summary at the end. Every line goes through :func:`~resilient_llm._secrets.redact` on its
way out, and every error through :func:`~resilient_llm._messages.describe`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._batch.results import BatchStats, ItemFailure
from .._messages import duration, one_line
from .._records import ClientStats
from .._secrets import redact
from .status import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = ["Console", "Reasons", "Report", "Tally", "make_bar", "render_summary", "route_logs"]

# Enough reports of bad input lines to see the pattern, not enough to bury the summary.
MAX_LINE_REPORTS = 20
# Kinds of failure the summary lists; the failures file has every one.
MAX_REASONS = 5


def err(text: str) -> None:
    """One message on stderr, keys masked."""
    print(redact(text), file=sys.stderr, flush=True)


class Console:
    """Messages on stderr, printed above the progress bar when there is one."""

    def __init__(self) -> None:
        self.bar: Any = None
        self._lock = threading.Lock()
        self._line_reports = 0

    def say(self, text: str) -> None:
        text = redact(text)
        with self._lock:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                err(text)

    def report_line(self, text: str, failures_path: Path) -> None:
        """A problem with one input line; after :data:`MAX_LINE_REPORTS` only a pointer."""
        self._line_reports += 1
        if self._line_reports <= MAX_LINE_REPORTS:
            self.say(text)
        elif self._line_reports == MAX_LINE_REPORTS + 1:
            self.say(f"more problems with input lines: see {failures_path}")


class _ConsoleLogHandler(logging.Handler):
    """Library log records as one line each on stderr, above the progress bar."""

    def __init__(self, console: Console, *, tracebacks: bool) -> None:
        super().__init__()
        self._console = console
        self._tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            if self._tracebacks:
                # The library's log filter has already turned exc_info into masked text; a record
                # of a child logger has not been through it, and the console masks it anyway.
                if record.exc_text:
                    text += "\n" + record.exc_text
                elif record.exc_info:
                    text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._console.say(text)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def route_logs(console: Console, verbosity: int) -> Iterator[None]:
    """The library's log lines on the console: errors only; -v each failed request and retry;
    -vv with tracebacks and INFO lines. The summary counts them either way."""
    logger = logging.getLogger("resilient_llm")
    handler = _ConsoleLogHandler(console, tracebacks=verbosity >= 2)
    handler.setLevel(
        logging.ERROR if verbosity <= 0 else logging.WARNING if verbosity == 1 else logging.INFO
    )
    previous_level = logger.level
    if verbosity >= 2:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def silence_logs() -> None:
    """Requests abandoned when a job stops early may still log on their way out (Python's last
    resort handler would print them); the summary stays the last word."""
    logger = logging.getLogger("resilient_llm")
    if not any(type(handler) is logging.NullHandler for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def make_bar(enabled: bool, total: int | None, description: str) -> Any:
    """A tqdm bar on a terminal, else ``None`` (the tqdm extra is optional: same results)."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="line", file=sys.stderr, dynamic_ncols=True)


# --- the summary ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of one run, as the command line saw its input lines."""

    lines: int = 0  # non-blank lines read
    blank: int = 0
    skipped: int = 0  # already in OUT
    malformed: int = 0  # malformed lines and duplicate ids
    succeeded: int = 0
    failed: int = 0  # not_sent included
    not_sent: int = 0  # failed without being sent because the job stopped first

    def resolved(self) -> int:
        return self.blank + self.skipped + self.malformed + self.succeeded + self.failed


@dataclass
class _Reason:
    count: int
    first: str


@dataclass
class Reasons:
    """The first failure of each kind, and how many there were: bounded by the kinds."""

    kinds: dict[str, _Reason] = field(default_factory=dict)

    def add(self, failure: ItemFailure, line: int, ident: object) -> bool:
        """Count ``failure``; returns whether it is the first of its kind."""
        kind = failure.error_type
        reason = self.kinds.get(kind)
        if reason is not None:
            reason.count += 1
            return False
        text = one_line(kind, failure.message, status=failure.status, limit=240)
        self.kinds[kind] = _Reason(1, f"{text} (line {line}, id {json.dumps(ident)})")
        return True


@dataclass
class Report:
    """Everything the summary says about one run."""

    kind: str
    tally: Tally
    output: Path
    failures_path: Path
    elapsed: float
    client_stats: ClientStats
    stats: BatchStats | None = None  # None when the batch did not run to its end
    reasons: Reasons = field(default_factory=Reasons)
    stopped_by: ItemFailure | None = None
    stop: str | None = None  # why the job stopped, when not on a failure of the batch
    exit_status: int | None = None  # 130 / 143


def _rows(report: Report) -> list[tuple[str, str, str]]:
    tally, stats, client = report.tally, report.stats, report.client_stats
    requests = stats.requests if stats is not None else client.attempts
    retries = (
        (stats.retries, stats.rate_limited, stats.timeouts)
        if stats is not None
        else (client.retries, client.rate_limited, client.timeouts)
    )
    failed = tally.failed + tally.malformed
    unfinished = tally.lines - (tally.succeeded + failed + tally.skipped)
    rows = [
        ("lines read", f"{tally.lines:,}", ""),
        ("succeeded", f"{tally.succeeded:,}", f"→ {report.output}" if tally.succeeded else ""),
        ("failed", f"{failed:,}", f"→ {report.failures_path}" if failed else ""),
        ("  not sent", f"{tally.not_sent:,}", "the job stopped first" if tally.not_sent else ""),
        ("  malformed lines", f"{tally.malformed:,}", ""),
        (
            "skipped (resumed)",
            f"{tally.skipped:,}",
            f"already in {report.output}" if tally.skipped else "",
        ),
    ]
    if unfinished:
        rows.append(("unfinished", f"{unfinished:,}", "in flight when the job stopped"))
    rows += [
        ("requests", f"{requests:,}", ""),
        ("retries", f"{retries[0]:,}", f"429s: {retries[1]}, timeouts: {retries[2]}"),
    ]
    if stats is not None and stats.size_limit is not None:
        rows.append(("size limit", f"{stats.size_limit:,}", "inputs per request, the server's"))
    throughput = tally.succeeded / report.elapsed if report.elapsed > 0 else 0.0
    rows.append(("elapsed", duration(report.elapsed), ""))
    rows.append(("throughput", f"{throughput:,.1f}", "items/s"))
    return rows


def render_summary(report: Report) -> str:
    """The summary printed at the end of a run: counts, the kinds of failure, what to do next."""
    stop = report.stopped_by
    if report.exit_status == EXIT_INTERRUPTED:
        headline = "interrupted (Ctrl-C)"
    elif report.exit_status == EXIT_TERMINATED:
        headline = "terminated (SIGTERM)"
    elif stop is not None or report.stop is not None:
        headline = "stopped"
    else:
        headline = "done"
    lines = [f"resilient-llm {report.kind}: {headline}"]
    for name, value, note in _rows(report):
        lines.append(f"  {name:<18}{value:>10}  {note}".rstrip())
    # The error that stopped the job is said once, below, not also among the kinds.
    kinds = [
        reason
        for kind, reason in report.reasons.kinds.items()
        if stop is None or kind != stop.error_type
    ]
    if kinds:
        lines.append(f"failures (the first of each kind; every one is in {report.failures_path}):")
        for reason in kinds[:MAX_REASONS]:
            inputs = "input" if reason.count == 1 else "inputs"
            lines.append(f"  {reason.count:,} {inputs}: {reason.first}")
        if len(kinds) > MAX_REASONS:
            lines.append(f"  … and {len(kinds) - MAX_REASONS} more kinds")
    if stop is not None:
        lines.append(f"stopped by {one_line(stop.error_type, stop.message, status=stop.status)}")
        lines.append(
            "every further request would meet this error, so nothing more was sent; fix it and "
            "run the same command again to resume"
        )
    elif report.stop is not None:
        lines.append(f"stopped: {report.stop}")
        lines.append(
            f"every line in {report.output} is whole; fix the cause and run the same command "
            "again to resume"
        )
    elif report.exit_status is not None:
        lines.append("what finished is saved; run the same command again to do the rest")
    return "\n".join(lines)
