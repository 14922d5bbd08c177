"""The arguments of the ``resilient-llm`` command line: its commands, their options and help.

:func:`build_parser` makes the parser; the values each option takes are checked here, so that a
wrong one is a usage error (exit 2) before anything is read or sent.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._config import MAX_BATCH_SIZE
from .._version import __version__

__all__ = ["MAX_BATCH_LINES", "build_parser"]


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


# The Batch API's limit of lines (requests) in one batch.
MAX_BATCH_LINES = 50_000


def _lines_per_batch(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_BATCH_LINES:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCH_LINES:,} (the Batch API's limit)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_job_command(
    commands: Any, name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A job command (``embed``, ``summarize``) with the options every job takes."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
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
        'from $OPENAI_API_KEY only; a server of your own needs none (the placeholder "EMPTY" '
        "is sent, as vLLM and Ollama expect)",
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
        help="-v: one line per retry and per failed request; -vv: with tracebacks",
    )
    batch = parser.add_argument_group(
        "Batch API",
        "--via batch sends the job through OpenAI's Batch API (half the price, its own rate "
        "pool, results within 24 h). Run the same command again to resume or collect it.",
    )
    batch.add_argument(
        "--via",
        choices=("live", "batch"),
        default="live",
        help="live requests (default), or the Batch API",
    )
    batch.add_argument(
        "--state",
        metavar="STATE",
        help="the batch job's state file (default: OUT with .batch.json, e.g. out.batch.json)",
    )
    batch.add_argument(
        "--no-wait",
        action="store_true",
        help="submit (or look once) and return: exit 75 while the job runs",
    )
    batch.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        type=_positive_float,
        default=5.0,
        help="first wait between looks at the batches; it grows to 60 s while nothing changes "
        "(default: 5)",
    )
    batch.add_argument(
        "--max-in-flight",
        metavar="N",
        type=_positive_int,
        help="batches running at once (stays under the model's enqueued-token limit)",
    )
    batch.add_argument(
        "--lines-per-batch",
        metavar="N",
        type=_lines_per_batch,
        default=MAX_BATCH_LINES,
        help="requests per batch (default and cap: 50,000)",
    )
    return parser


def _add_batch_commands(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="show, cancel or collect a Batch API job (made with --via batch)",
        description="Look at, cancel or collect a job made by embed/summarize --via batch, "
        "by its state file.",
    )
    actions = batch.add_subparsers(dest="action", metavar="ACTION", required=True)

    def server_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("state", metavar="STATE", help="the job's state file")
        parser.add_argument(
            "--base-url",
            metavar="URL",
            help="the server (default: the one the job was made on)",
        )
        parser.add_argument(
            "--deadline",
            metavar="SECONDS",
            type=_positive_float,
            default=120.0,
            help="wall-clock seconds per API call, retries included (default: 120)",
        )

    status = actions.add_parser(
        "status",
        help="the job's batches and counts",
        description="Print the job's shards and batches: the state file, and the server's "
        "counts for the batches still running.",
    )
    server_options(status)
    cancel = actions.add_parser(
        "cancel",
        help="cancel every batch of the job",
        description="Cancel every running batch of the job and send nothing more. Inputs that "
        "did not run become failures, never sent again; answers already in are kept. Then "
        "collect the job.",
    )
    server_options(cancel)
    collect = actions.add_parser(
        "collect",
        help="wait for the job and write its results",
        description="Wait for the job, then write its results to OUT and its failures to the "
        "failures file, as the command that made it does when run again. IN is not read.",
    )
    server_options(collect)
    collect.add_argument(
        "-o", "--output", metavar="OUT", help="results file (default: the job's OUT)"
    )
    collect.add_argument(
        "--failures", metavar="PATH", help="failures file (default: the job's, or OUT's)"
    )
    collect.add_argument(
        "--no-wait", action="store_true", help="look once: exit 75 while the job runs"
    )
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    collect.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: retries and resubmissions"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-llm",
        description="Batch jobs against OpenAI (or a compatible server) that lose nothing: "
        "results are written as they finish, failures are recorded with reasons, and a re-run "
        "resumes where the last one stopped.",
        epilog="Exit status: 0 all succeeded; 1 stopped early on an error every request or write "
        "would meet (rejected key, unknown model, no quota, server unreachable, disk full, no "
        "Batch API); 2 usage error, nothing sent; 3 some inputs failed; 75 a batch job is "
        "submitted and not finished (--no-wait); 130 Ctrl-C; 143 SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"resilient-llm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = _add_job_command(
        commands,
        "embed",
        help="embed every text of IN into OUT",
        description='Embed every text of IN; write {"id", "embedding"} lines to OUT.',
    )
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

    summarize = _add_job_command(
        commands,
        "summarize",
        help="summarise every text of IN into OUT",
        description='Summarise every text of IN; write {"id", "summary"} lines to OUT.',
    )
    summarize.add_argument(
        "--instructions", metavar="TEXT", help="replace the default summary instructions"
    )
    summarize.add_argument(
        "--max-words", metavar="N", type=_positive_int, help="summary length bound"
    )

    _add_batch_commands(commands)
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
