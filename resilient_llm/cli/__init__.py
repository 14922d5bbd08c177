"""The ``resilient-llm`` command line: batch jobs over files, the mock server, and a demo.

::

    resilient-llm embed IN -o OUT [options]       one {"id", "embedding"} line per input
    resilient-llm summarize IN -o OUT [options]   one {"id", "summary"} line per input
        ... --via batch [--state STATE] [--no-wait]   the same through OpenAI's Batch API
    resilient-llm batch status|cancel|collect STATE   a Batch API job made by --via batch
    resilient-llm mock-server [options]           the testing kit's loopback server
    resilient-llm demo                            a batch against a misbehaving local server

This module hands the arguments (:mod:`.parser`) to their command. :mod:`.run` holds what every
job shares (its settings, the checks before anything is sent, its files and counts); :mod:`.job`
runs a job over files with live requests, :mod:`.batch` through the Batch API (the job made or
resumed by :mod:`.batch_make`, recorded by :mod:`.batch_record`, shown by
:mod:`.batch_progress`), and :mod:`.batch_commands` is ``batch status|cancel|collect``.
:mod:`.inputs` turns input lines into texts, :mod:`.outcomes` writes each outcome, :mod:`.io`
reads and writes the files, :mod:`.console` says what happens on stderr, :mod:`.demo` is the
demo and :mod:`.status` lists the exit statuses.

Results are appended to OUT as they finish and failures to OUT's ``.failures.jsonl``; a re-run
skips the ids already in OUT, so Ctrl-C, SIGTERM or a crash loses nothing. The command line is
the only part of the library that prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .._messages import describe
from .batch import run_batch_job
from .batch_commands import cancel_job, collect_job, job_status
from .console import err
from .demo import run_demo
from .job import run_job
from .parser import MAX_BATCH_LINES, build_parser
from .run import JobSettings
from .status import EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USAGE, UsageError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status (see :mod:`resilient_llm.cli.status`).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "mock-server":
        from ..testing._cli import run_mock_server_cli

        return run_mock_server_cli(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "demo":
            return run_demo()
        if args.command == "batch":
            return _batch_command(args)
        settings = _settings(args)
        if settings.via == "batch":
            return run_batch_job(settings)
        _check_live(args)
        return run_job(settings)
    except UsageError as exc:
        err(f"resilient-llm {args.command}: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the job started, or during the demo: nothing to save
        err(f"resilient-llm {args.command}: interrupted")
        return EXIT_INTERRUPTED


def _check_live(args: argparse.Namespace) -> None:
    batch_only = [
        option
        for option, given in (
            ("--state", args.state is not None),
            ("--no-wait", args.no_wait),
            ("--max-in-flight", args.max_in_flight is not None),
            ("--lines-per-batch", args.lines_per_batch != MAX_BATCH_LINES),
        )
        if given
    ]
    if batch_only:
        raise UsageError(f"{', '.join(batch_only)}: for --via batch only")


def _batch_command(args: argparse.Namespace) -> int:
    state = Path(args.state)
    common = {"base_url": args.base_url, "deadline": args.deadline}
    try:
        if args.action == "status":
            return job_status(state, **common)
        if args.action == "cancel":
            return cancel_job(state, **common)
        return collect_job(
            state,
            output=Path(args.output) if args.output else None,
            failures=Path(args.failures) if args.failures else None,
            wait=not args.no_wait,
            progress=not args.no_progress,
            verbose=args.verbose,
            **common,
        )
    except UsageError as exc:
        err(f"resilient-llm batch {args.action}: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err(f"resilient-llm batch {args.action}: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the server refused a look or a cancel: one line, not a traceback
        err(f"resilient-llm batch {args.action}: {describe(exc)}")
        return EXIT_STOPPED


def _settings(args: argparse.Namespace) -> JobSettings:
    embed = args.command == "embed"
    return JobSettings(
        kind=args.command,
        input=args.input,
        output=Path(args.output),
        failures=Path(args.failures) if args.failures else None,
        resume=args.resume,
        base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        model=args.model,
        concurrency=args.concurrency,
        deadline=args.deadline,
        rpm=args.rpm,
        tpm=args.tpm,
        progress=not args.no_progress,
        verbose=args.verbose,
        batch_size=args.batch_size if embed else None,
        dimensions=args.dimensions if embed else None,
        too_long=args.too_long if embed else "fail",
        instructions=None if embed else args.instructions,
        max_words=None if embed else args.max_words,
        via=args.via,
        state=Path(args.state) if args.state else None,
        wait=not args.no_wait,
        poll_interval=args.poll_interval,
        max_in_flight=args.max_in_flight,
        lines_per_batch=args.lines_per_batch,
    )
