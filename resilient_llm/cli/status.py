"""Exit statuses of the command line, and the two exceptions that choose one on their way out."""

from __future__ import annotations

import contextlib
import signal
import threading
import types
from collections.abc import Iterator

__all__ = [
    "EXIT_FAILURES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_STOPPED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "UsageError",
    "interrupt_status",
    "sigterm_as_interrupt",
]

#: Every input succeeded.
EXIT_OK = 0
#: The job stopped early on an error every further request or write would meet: a rejected key,
#: an unknown model, no quota, a server that cannot be reached, a disk that is full. What finished
#: is saved; fix the cause and run the same command again.
EXIT_STOPPED = 1
#: The command line or its files are wrong; nothing was sent.
EXIT_USAGE = 2
#: The job ran to the end and some inputs failed: they are in the failures file.
EXIT_FAILURES = 3
#: ``--via batch --no-wait``: the batch job is submitted and not finished yet; run the same
#: command (or ``batch collect``) again later. 75 is ``EX_TEMPFAIL`` of sysexits.h: "try again".
EXIT_PENDING = 75
#: Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: SIGTERM (128 + SIGTERM).
EXIT_TERMINATED = 143


class UsageError(Exception):
    """A problem with the command line or its files, found before anything was sent: exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken down the same path as Ctrl-C so that the files are closed whole."""


def interrupt_status(exc: KeyboardInterrupt) -> int:
    """The exit status of Ctrl-C, or of SIGTERM taken as :class:`Terminated`."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
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
