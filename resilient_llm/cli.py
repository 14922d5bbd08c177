"""The ``resilient-llm`` command line: batch jobs over files, the mock server, and a demo.

::

    resilient-llm embed IN -o OUT [options]       one {"id", "embedding"} line per input
    resilient-llm summarize IN -o OUT [options]   one {"id", "summary"} line per input
    resilient-llm mock-server [options]           the testing kit's loopback server
    resilient-llm demo                            a batch against a misbehaving local server

Results are appended to OUT as they finish and failures to OUT's ``.failures.jsonl``; a re-run
skips the ids already in OUT, so Ctrl-C, SIGTERM or a crash loses nothing. Memory holds the
batch's bounded window and one set of the ids read (to skip done ones and refuse duplicates).

Exit status: 0 every input succeeded; 1 the batch stopped on an error every request would meet
(a bad key, an unknown model, no quota); 2 usage error; 3 some inputs failed (see the failures
file); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). This is the only module of the
library that prints.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._batch.results import ItemFailure
from ._batch.streams import BatchStream
from ._call import RetryDetails
from ._cli_io import (
    Document,
    JsonlWriter,
    Malformed,
    count_lines,
    failures_path_for,
    id_key,
    is_local_url,
    parse_line,
    scan_output,
)
from ._client import ResilientClient
from ._config import MAX_BATCH_SIZE, RetryPolicy, Timeouts
from ._exceptions import DeadlineExceeded

if TYPE_CHECKING:
    from .testing import MockOpenAIServer
from ._version import __version__

__all__ = ["main"]

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_FAILURES = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

# A server that refuses these refuses every request: stop reading instead of failing every line.
_FATAL_ERRORS = frozenset({"AuthenticationError", "PermissionDeniedError", "NotFoundError"})
# Enough malformed-line reports to see the pattern, not enough to bury the summary.
_MAX_LINE_REPORTS = 20
# Placeholder for local servers (vLLM, Ollama, the mock server) that accept any key.
_LOCAL_PLACEHOLDER_KEY = "sk-local-no-key"


class UsageError(Exception):
    """A problem with the command line or its files: exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken down the same path as Ctrl-C so that the files are flushed and closed."""


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- arguments ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH_SIZE} (the API's limit), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input",
        metavar="IN",
        help='input file: JSONL lines {"id": ..., "text": ...} or plain text (one document '
        "a line, id = line number); - reads stdin",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUT", required=True, help="results file (JSONL, appended)"
    )
    parser.add_argument(
        "--failures",
        metavar="PATH",
        help="failures file (default: OUT with .failures.jsonl, e.g. out.failures.jsonl)",
    )
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip ids already in OUT (default); --no-resume starts OUT afresh",
    )
    parser.add_argument("--model", metavar="NAME", help="model name (default: the library's)")
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="OpenAI-compatible API (default: $OPENAI_BASE_URL, then OpenAI). The key is read "
        "from $OPENAI_API_KEY only; a loopback URL needs none",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=8,
        help="requests in flight (default: 8)",
    )
    parser.add_argument(
        "--deadline",
        metavar="SECONDS",
        type=_positive_float,
        default=120.0,
        help="wall-clock seconds per request, retries included (default: 120)",
    )
    parser.add_argument(
        "--rpm", metavar="N", type=_positive_int, help="client-side requests per minute"
    )
    parser.add_argument(
        "--tpm", metavar="N", type=_positive_int, help="client-side tokens per minute"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: log each retry and failed item; -vv: with tracebacks",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-llm",
        description="Batch jobs against OpenAI (or a compatible server) that lose nothing: "
        "results are written as they finish, failures are recorded with reasons, and a re-run "
        "resumes where the last one stopped.",
        epilog="Exit status: 0 all succeeded, 1 stopped on a fatal error (bad key, unknown "
        "model), 2 usage error, 3 some inputs failed, 130 Ctrl-C, 143 SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"resilient-llm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = commands.add_parser(
        "embed",
        help="embed every text of IN into OUT",
        description='Embed every text of IN; write {"id", "embedding"} lines to OUT.',
    )
    _add_job_options(embed)
    embed.add_argument(
        "--batch-size",
        metavar="N",
        type=_batch_size,
        help="inputs per request (default and cap: 2048)",
    )
    embed.add_argument(
        "--dimensions", metavar="N", type=_positive_int, help="vector size (text-embedding-3)"
    )
    embed.add_argument(
        "--too-long",
        choices=("fail", "truncate"),
        default="fail",
        help="inputs over the model's token limit: fail them (default) or truncate them",
    )

    summarize = commands.add_parser(
        "summarize",
        help="summarise every text of IN into OUT",
        description='Summarise every text of IN; write {"id", "summary"} lines to OUT.',
    )
    _add_job_options(summarize)
    summarize.add_argument(
        "--instructions", metavar="TEXT", help="replace the default summary instructions"
    )
    summarize.add_argument(
        "--max-words", metavar="N", type=_positive_int, help="summary length bound"
    )

    commands.add_parser(
        "mock-server",
        help="run the testing kit's fault-injecting OpenAI server (see mock-server --help)",
        add_help=False,
    )
    commands.add_parser(
        "demo",
        help="run batches against a local server that misbehaves on purpose (no key needed)",
        description="Start the embedded mock server with faults switched on, run an embedding "
        "batch and a summary batch through the library, and explain what happened. Exits 0 "
        "when the accounting matches the faults that were injected.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status (see the module docstring).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "mock-server":
        from .testing._cli import run_mock_server_cli

        return run_mock_server_cli(args_list[1:])
    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "demo":
            return _demo()
        return _run_job(args)
    except UsageError as exc:
        _err(f"resilient-llm {args.command}: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the job started, or during the demo: nothing to save
        _err(f"resilient-llm {args.command}: interrupted")
        return EXIT_INTERRUPTED


# --- signals --------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` so that it unwinds like Ctrl-C, closing files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- log records of the library -------------------------------------------------------------


class _ConsoleLogHandler(logging.Handler):
    """Library log records as one line each on stderr, above the progress bar."""

    def __init__(self, console: _Console, *, tracebacks: bool) -> None:
        super().__init__()
        self._console = console
        self._tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            if self._tracebacks and record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._console.say(text)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _route_logs(console: _Console, verbosity: int) -> Iterator[None]:
    """Retries and failed items are counted in the summary; list them one by one with -v."""
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


# --- the batch job --------------------------------------------------------------------------


@dataclass
class _Tally:
    """Counts of one run."""

    lines: int = 0  # non-blank lines read
    blank: int = 0
    skipped: int = 0  # already in OUT
    malformed: int = 0  # malformed lines and duplicate ids
    succeeded: int = 0
    failed: int = 0
    reported: int = 0  # malformed lines reported on stderr

    def resolved(self) -> int:
        return self.blank + self.skipped + self.malformed + self.succeeded + self.failed


@dataclass
class _Console:
    """Messages on stderr, printed above the progress bar when there is one."""

    bar: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            with self.lock:
                _err(text)


def _make_bar(enabled: bool, total: int | None, description: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the tqdm extra is optional: no bar, same results
        return None
    return tqdm(total=total, desc=description, unit="line", file=sys.stderr, dynamic_ncols=True)


def _api_key(base_url: str | None) -> str:
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if is_local_url(base_url):
        return _LOCAL_PLACEHOLDER_KEY
    raise UsageError(
        "OPENAI_API_KEY is not set. Export your key (export OPENAI_API_KEY=...), or point "
        "--base-url at a local OpenAI-compatible server, which needs none. "
        "`resilient-llm demo` runs with no key at all."
    )


def _open_input(name: str) -> tuple[IO[bytes], int | None, bool]:
    """The input stream, its line count when it is a file, and whether to close it."""
    if name == "-":
        return sys.stdin.buffer, None, False
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"input file not found: {name}")
    try:
        return path.open("rb"), count_lines(path), True
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None


def _check_output(args: argparse.Namespace) -> tuple[Path, Path]:
    output = Path(args.output)
    failures = Path(args.failures) if args.failures else failures_path_for(output)
    for path, name in ((output, "OUT"), (failures, "the failures file")):
        if not path.parent.is_dir():
            raise UsageError(f"the folder of {name} does not exist: {path.parent}")
    if output.is_dir():
        raise UsageError(f"OUT is a folder: {output}")
    if args.input != "-":
        source = Path(args.input).resolve()
        for path in (output, failures):
            if path.resolve() == source:
                raise UsageError(f"IN and {path} are the same file")
    if failures.resolve() == output.resolve():
        raise UsageError("OUT and the failures file are the same file")
    return output, failures


def _run_job(args: argparse.Namespace) -> int:
    kind: str = args.command
    output, failures_path = _check_output(args)
    base_url: str | None = args.base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = _api_key(base_url)
    stream, total_lines, owns_stream = _open_input(args.input)
    try:
        with _sigterm_as_interrupt():
            return _process(
                args, kind, stream, total_lines, output, failures_path, base_url, api_key
            )
    finally:
        if owns_stream:
            stream.close()


def _process(
    args: argparse.Namespace,
    kind: str,
    stream: IO[bytes],
    total_lines: int | None,
    output: Path,
    failures_path: Path,
    base_url: str | None,
    api_key: str,
) -> int:
    console = _Console()
    if args.resume:
        resume = scan_output(output)
        if resume.cut_bytes:
            console.say(
                f"{output}: removed an incomplete last line ({resume.cut_bytes} bytes) left by an "
                "interrupted run; that input is done again"
            )
        if resume.unreadable:
            console.say(f"{output}: {resume.unreadable} unreadable lines ignored")
        done = resume.done
    else:
        output.unlink(missing_ok=True)
        done = set()
    # Failures of an earlier run are retried now; the file is rewritten with this run's.
    failures_path.unlink(missing_ok=True)
    results = JsonlWriter(output)
    try:
        results.open()  # a file that cannot be written fails now, not after an hour of work
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    failures = JsonlWriter(failures_path)
    tally = _Tally()
    seen: set[str] = set()
    # Only inputs handed to the library and not yet finished: the batch bounds how many.
    in_flight: dict[int, tuple[object, int]] = {}
    positions = itertools.count()

    def malformed(line: int, ident: object, reason: str) -> None:
        tally.malformed += 1
        failures.write(
            {
                "id": ident,
                "line": line,
                "error_type": "MalformedLine",
                "message": reason,
                "status": None,
                "attempts": 0,
            }
        )
        if tally.reported < _MAX_LINE_REPORTS:
            console.say(f"line {line}: {reason}; skipped")
        elif tally.reported == _MAX_LINE_REPORTS:
            console.say(f"more malformed lines: see {failures_path}")
        tally.reported += 1

    def texts() -> Iterator[object]:
        for number, raw in enumerate(stream, start=1):
            parsed = parse_line(raw, number)
            if parsed is None:
                tally.blank += 1
                continue
            tally.lines += 1
            if isinstance(parsed, Malformed):
                malformed(parsed.line, parsed.id, parsed.reason)
                continue
            assert isinstance(parsed, Document)
            key = id_key(parsed.id)
            if key in seen:
                malformed(parsed.line, parsed.id, f"duplicate id {key}")
                continue
            seen.add(key)
            if key in done:
                tally.skipped += 1
                continue
            in_flight[next(positions)] = (parsed.id, parsed.line)
            yield parsed.text

    value_field = "embedding" if kind == "embed" else "summary"
    bar = _make_bar(not args.no_progress, total_lines, kind)
    console.bar = bar
    started = time.monotonic()
    exit_status: int | None = None
    fatal: str | None = None
    stats: Any = None
    client = ResilientClient(
        api_key=api_key,
        base_url=base_url,
        deadline=args.deadline,
        max_concurrency=args.concurrency,
    )
    try:
        with _route_logs(console, args.verbose), client:
            with _open_stream(client, kind, texts(), args) as batch:
                for index, outcome in batch:
                    ident, line = in_flight.pop(index)
                    if isinstance(outcome, ItemFailure):
                        tally.failed += 1
                        failures.write(_failure_record(ident, line, outcome))
                        if bar is not None:
                            bar.set_postfix(failed=tally.failed + tally.malformed, refresh=False)
                        if _is_fatal(outcome):
                            fatal = f"{outcome.error_type}: {outcome.message}"
                            break
                    else:
                        results.write({"id": ident, value_field: outcome})
                        tally.succeeded += 1
                    if bar is not None:
                        bar.update(tally.resolved() - bar.n)
                else:
                    stats = batch.result().stats
            if bar is not None:
                bar.update(tally.resolved() - bar.n)
    except KeyboardInterrupt as exc:
        exit_status = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        # Abandoned requests may still log on their way out; the process is about to exit and
        # the summary must stay the last word.
        logging.getLogger("resilient_llm").addHandler(logging.NullHandler())
    except Exception as exc:  # raised by the batch itself, not by one input: stop
        fatal = f"{type(exc).__name__}: {exc}"
    finally:
        if bar is not None:
            bar.close()
        console.bar = None
        results.close()
        failures.close()
    _print_summary(
        kind,
        tally,
        client_stats=client.stats,
        batch_stats=stats,
        elapsed=time.monotonic() - started,
        output=output,
        failures_path=failures_path,
        exit_status=exit_status,
        fatal=fatal,
    )
    if exit_status is not None:
        return exit_status
    if fatal is not None:
        return EXIT_FATAL
    return EXIT_FAILURES if tally.failed or tally.malformed else EXIT_OK


def _is_fatal(failure: ItemFailure) -> bool:
    """An error every further request would meet, so reading on would only fail every line."""
    if failure.error_type in _FATAL_ERRORS:
        return True
    return failure.status == 429 and "quota" in failure.message.lower()


def _failure_record(ident: object, line: int, failure: ItemFailure) -> dict[str, object]:
    return {
        "id": ident,
        "line": line,
        "error_type": failure.error_type,
        "message": failure.message,
        "status": failure.status,
        "attempts": failure.attempts,
    }


def _open_stream(
    client: ResilientClient, kind: str, texts: Iterator[object], args: argparse.Namespace
) -> BatchStream[Any]:
    common: dict[str, Any] = {
        "max_concurrency": args.concurrency,
        "requests_per_minute": args.rpm,
        "tokens_per_minute": args.tpm,
        "progress": False,
    }
    if args.model:
        common["model"] = args.model
    if kind == "embed":
        params: dict[str, Any] = {}
        if args.dimensions:
            params["dimensions"] = args.dimensions
        return client.iter_embed_batch(
            texts, batch_size=args.batch_size, too_long=args.too_long, **common, **params
        )
    return client.iter_summarize_batch(
        texts, instructions=args.instructions, max_words=args.max_words, **common
    )


def _print_summary(
    kind: str,
    tally: _Tally,
    *,
    client_stats: Any,
    batch_stats: Any,
    elapsed: float,
    output: Path,
    failures_path: Path,
    exit_status: int | None,
    fatal: str | None,
) -> None:
    if exit_status == EXIT_INTERRUPTED:
        headline = "interrupted (Ctrl-C)"
    elif exit_status == EXIT_TERMINATED:
        headline = "terminated (SIGTERM)"
    elif fatal is not None:
        headline = "stopped"
    else:
        headline = "done"
    throughput = tally.succeeded / elapsed if elapsed > 0 else 0.0
    requests = batch_stats.requests if batch_stats is not None else client_stats.attempts
    rows = [
        ("lines read", f"{tally.lines:,}", ""),
        ("succeeded", f"{tally.succeeded:,}", f"→ {output}" if tally.succeeded else ""),
        (
            "failed",
            f"{tally.failed + tally.malformed:,}",
            f"→ {failures_path}" if tally.failed or tally.malformed else "",
        ),
        ("  malformed lines", f"{tally.malformed:,}", ""),
        (
            "skipped (resumed)",
            f"{tally.skipped:,}",
            f"already in {output}" if tally.skipped else "",
        ),
        ("requests", f"{requests:,}", ""),
        (
            "retries",
            f"{client_stats.retries:,}",
            f"429s: {client_stats.rate_limited}, timeouts: {client_stats.timeouts}",
        ),
        ("elapsed", f"{elapsed:.2f} s", ""),
        ("throughput", f"{throughput:,.1f}", "items/s"),
    ]
    lines = [f"resilient-llm {kind}: {headline}"]
    for name, value, note in rows:
        lines.append(f"  {name:<18}{value:>10}  {note}".rstrip())
    if fatal is not None:
        lines.append(f"stopped on an error every request would meet: {fatal}")
        lines.append("nothing more was sent; fix it and run the same command again to resume")
    elif exit_status is not None:
        lines.append("what finished is saved; run the same command again to do the rest")
    _err("\n".join(lines))


# --- demo -----------------------------------------------------------------------------------

_DEMO_TEXTS = 300
_DEMO_BATCH = 20
_DEMO_POISON = 137
_DEMO_READ_TIMEOUT = 1.0
_DEMO_DEADLINE = 1.5
_TOPICS = (
    "invoice",
    "support ticket",
    "release note",
    "meeting summary",
    "product review",
    "incident report",
)


def _demo_texts() -> list[str]:
    texts = [
        f"Document {i}: a short {_TOPICS[i % len(_TOPICS)]} about item {i * 7 % 101}, "
        f"written for the resilient_llm demo."
        for i in range(_DEMO_TEXTS)
    ]
    texts[_DEMO_POISON] = "Document 137 carries the POISON marker, which the server rejects."
    return texts


def _describe_retry(details: RetryDetails) -> str:
    headers = getattr(getattr(details.error, "response", None), "headers", None) or {}
    asked = next(
        (
            f"{name}: {headers[name]}"
            for name in ("retry-after-ms", "retry-after")
            if name in headers
        ),
        None,
    )
    if details.status == 429:
        what = "HTTP 429 rate limit"
    elif details.status is not None:
        what = f"HTTP {details.status} {details.error_type}"
    elif details.error_type == "APITimeoutError":
        what = f"no answer within the {_DEMO_READ_TIMEOUT:g} s read timeout (a hung request)"
    else:
        what = f"{details.error_type} (connection reset)"
    wait = (
        f"waited {details.sleep:.2f} s as the server asked ({asked})"
        if asked
        else f"backed off {details.sleep:.2f} s"
    )
    return f"{details.operation} attempt {details.attempt}: {what} -> {wait}, retried"


_NOTES = (
    "The Q3 planning meeting agreed to ship the importer in October and to hire two support "
    "engineers before the holiday peak.",
    "Customer reports that exports time out for files over 2 GB; the workaround is to split "
    "the export by month until the fix is released.",
    "Release 4.2 adds single sign-on, fixes the calendar sync bug, and drops support for the "
    "legacy v1 API.",
    "The incident on Tuesday was caused by an expired certificate on the EU gateway; renewal "
    "is now automated.",
    "Survey results: users like the new dashboard but find the export settings hard to discover.",
)


class _Demo:
    """The three acts of ``resilient-llm demo``, and the check that the accounting adds up."""

    def __init__(self, server: MockOpenAIServer, out: IO[str]) -> None:
        self.server = server
        self.out = out
        self.problems: list[str] = []
        self._retries: list[RetryDetails] = []
        self._lock = threading.Lock()

    def on_retry(self, details: RetryDetails) -> None:
        with self._lock:
            self._retries.append(details)

    def take_retries(self) -> list[RetryDetails]:
        with self._lock:
            taken, self._retries = self._retries, []
        return taken

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.problems.append(what)

    def embed(self, client: ResilientClient) -> None:
        from .testing import Fault

        faults = [
            Fault.status(429, retry_after=1),
            Fault.status(500),
            Fault.reset(),
            Fault.status(429, retry_after_ms=250),
            Fault.hang(),
            Fault.status(503),
        ]
        self.server.script(*faults, path="/v1/embeddings")
        self.say(
            f"1. Embedding {_DEMO_TEXTS} texts, {_DEMO_BATCH} per request, at most 8 requests at "
            "a time.\n"
            "   Injected: 2 x HTTP 429 (Retry-After: 1 and retry-after-ms: 250), 1 x 500, "
            "1 x 503,\n"
            f"   1 connection reset, 1 request that never answers; and text #{_DEMO_POISON} "
            'contains "POISON",\n'
            "   which the server rejects with HTTP 400."
        )
        result = client.embed_batch(_demo_texts(), batch_size=_DEMO_BATCH)
        retried = self.take_retries()
        self.say(f"   Retried and recovered ({len(retried)}):")
        for details in sorted(retried, key=lambda d: (d.status or 0, d.error_type)):
            self.say(f"     - {_describe_retry(details)}")
        stats = result.stats
        self.say(f"   Failed ({stats.failed}):")
        for failure in result.failures:
            status = f" (HTTP {failure.status})" if failure.status is not None else ""
            self.say(
                f"     - item {failure.index}: {failure.error_type}{status}: "
                f"{failure.message[:90]}\n"
                f"       input: {failure.preview!r}"
            )
        if stats.bisections:
            self.say(
                f"     The request holding item {_DEMO_POISON} was split in halves "
                f"{stats.bisections} times to isolate it;\n"
                f"     the other {_DEMO_BATCH - 1} texts of that request were embedded."
            )
        self.say(
            f"   Accounting: {stats.succeeded} embedded + {stats.failed} failed = {stats.total} "
            "inputs, each exactly once;\n"
            f"   {stats.requests} requests, {stats.retries} retries ({stats.rate_limited} "
            f"rate-limited, {stats.timeouts} timed out), {stats.elapsed:.2f} s.\n"
        )
        self.check(stats.total == _DEMO_TEXTS, f"embed: {stats.total} inputs counted")
        self.check(
            [(f.index, f.status) for f in result.failures] == [(_DEMO_POISON, 400)],
            "embed: the poisoned text should be the only failure, with HTTP 400",
        )
        self.check(
            all(v is not None for i, v in enumerate(result.values) if i != _DEMO_POISON),
            "embed: every other text should have a vector",
        )
        expected = (len(faults), 2, 1)
        got = (stats.retries, stats.rate_limited, stats.timeouts)
        self.check(got == expected, f"embed: (retries, 429s, timeouts) {got}, not {expected}")

    def summarize(self, client: ResilientClient) -> None:
        from .testing import Fault

        faults = [Fault.status(503, retry_after_ms=200), Fault.status(502)]
        self.server.script(*faults, path="/v1/chat/completions")
        self.say(
            f"2. Summarising {len(_NOTES)} texts, one chat completion each. Injected: "
            "1 x 503 (retry-after-ms: 200), 1 x 502."
        )
        result = client.summarize_batch(_NOTES, max_words=20)
        for details in self.take_retries():
            self.say(f"     - {_describe_retry(details)}")
        for index, summary in result.succeeded():
            self.say(f"     [{index}] {summary[:88]}")
        stats = result.stats
        self.say(
            f"   Accounting: {stats.succeeded} summarised + {stats.failed} failed = "
            f"{stats.total}; {stats.retries} retries, {stats.elapsed:.2f} s.\n"
        )
        self.check(result.ok and stats.total == len(_NOTES), "summarize: every text summarised")
        self.check(stats.retries == len(faults), f"summarize: {stats.retries} retries")

    def deadline(self, client: ResilientClient) -> None:
        from .testing import Fault

        self.server.script(*[Fault.hang()] * 5, path="/v1/embeddings")
        self.say(
            "3. One embedding call to a server that never answers, with "
            f"deadline={_DEMO_DEADLINE:g} (seconds, retries included)."
        )
        started = time.monotonic()
        try:
            client.embed("does anybody hear me?", deadline=_DEMO_DEADLINE)
        except DeadlineExceeded as exc:
            took = time.monotonic() - started
            self.say(
                f"   DeadlineExceeded after {took:.2f} s: {exc}\n"
                "   (the official client's defaults would wait up to 600 s per attempt, "
                "3 attempts.)\n"
            )
            self.check(took < _DEMO_DEADLINE + 1.0, f"deadline: the call took {took:.2f} s")
        else:
            self.check(False, "deadline: the hung call should have raised DeadlineExceeded")
        self.take_retries()
        self.server.clear_faults()

    def check_server(self) -> None:
        injected = self.server.stats.faults_injected
        expected = {"status_429": 2, "status_500": 1, "status_503": 2, "status_502": 1, "reset": 1}
        for name, count in expected.items():
            self.check(injected.get(name) == count, f"server: {name} x {injected.get(name)}")
        self.check(injected.get("hang", 0) >= 3, "server: hung requests")


def _demo() -> int:
    from .testing import MockOpenAIServer

    started = time.monotonic()
    with _route_logs(_Console(), 0), MockOpenAIServer(latency=(0.002, 0.01), seed=5) as server:
        demo = _Demo(server, sys.stdout)
        client = ResilientClient(
            api_key="sk-demo-no-key-needed",
            base_url=server.base_url,
            timeouts=Timeouts(connect=2.0, read=_DEMO_READ_TIMEOUT, write=2.0, pool=2.0),
            deadline=10.0,
            retry=RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.5),
            on_retry=demo.on_retry,
        )
        with client:
            demo.say(
                "resilient-llm demo: no API key, no network. A local OpenAI-compatible server\n"
                f"({server.base_url}) fails on purpose; the library has to cope.\n"
            )
            demo.embed(client)
            demo.summarize(client)
            demo.deadline(client)
        demo.check_server()
    if demo.problems:
        demo.say("The accounting does NOT match what was injected:")
        for problem in demo.problems:
            demo.say(f"  - {problem}")
        return EXIT_FATAL
    demo.say(
        "Every input is accounted for and the only failure is the one injected "
        f"({time.monotonic() - started:.1f} s in all).\n"
        "Next: export OPENAI_API_KEY=... and run\n"
        "  resilient-llm embed docs.jsonl -o vectors.jsonl     "
        '(lines {"id": ..., "text": ...} or plain text)'
    )
    return EXIT_OK
