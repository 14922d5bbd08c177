"""`FileRateLimiter`: one budget for every process of one machine, kept in a SQLite file.

Each booking is one short write transaction (``BEGIN IMMEDIATE``: read the bucket, write it
back), so processes and threads book one at a time in a total order, on one clock
(``time.time()``, the only clock processes can compare). SQLite's locks are POSIX locks held by
the process: when a process dies, killed mid-transaction included, the kernel releases them and
the next writer rolls the unfinished transaction back. WAL mode keeps a commit to one append to
the log, without an fsync (``synchronous=NORMAL``): losing the last bookings to a power cut only
forgets a few seconds of spacing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from .._closing import Closing
from ._budget import NEVER, Budget, BudgetSettings, check_pause
from ._fork import after_fork

__all__ = ["FileRateLimiter"]

T = TypeVar("T")

logger = logging.getLogger("resilient_llm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    requests REAL,
    tokens REAL,
    paused REAL
)
"""

# A connection inherited over fork() belongs to the parent: closing it in the child could drop
# locks and state the parent's SQLite relies on, so the child keeps its copy here, untouched.
_inherited: list[sqlite3.Connection] = []


def _stored(value: Any) -> float:
    return NEVER if value is None else float(value)


class FileRateLimiter(BudgetSettings, Closing):
    """Requests-per-minute and tokens-per-minute budgets shared by every process of a machine.

    Give every worker (gunicorn/uvicorn workers, multiprocessing pools, cron jobs) the same
    ``path`` and the same budgets: together they stay within the budget, with the arithmetic of
    :class:`LocalRateLimiter`. The file is made on first use; put it on a local disk (SQLite's
    locks are unreliable on network file systems). Nothing needs to run besides the workers.

    Safe under concurrent processes and threads, and across ``fork()`` (the child opens its own
    connection). A worker killed at any moment leaves no lock behind.

    Args:
        path: The budget file (a SQLite database), e.g. ``"/tmp/openai.budget"``.
        requests_per_minute: The request budget, or ``None`` for no limit.
        tokens_per_minute: The token budget, or ``None`` for no limit.
        window: Seconds over which the budget is counted.
        timeout: Seconds to wait for the file's lock before giving up; another process holds
            it for well under a millisecond per booking.

    Raises:
        TypeError, ValueError: A setting is invalid (the message names it), or ``path`` cannot
            be opened as a budget file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        window: float = 60.0,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        self._budget = Budget.of(requests_per_minute, tokens_per_minute, window)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.path = os.fspath(path)
        self._timeout = float(timeout)
        # Wall-clock seconds: the one clock that every process reads alike.
        self._clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._connection()  # a bad path fails here, not at the first request
        after_fork(self)

    def reserve(self, tokens: int = 0) -> float:
        """:meth:`RateLimiter.reserve`, for every process that shares the file.

        Raises ``TypeError`` / ``ValueError`` when ``tokens`` is not an int >= 0, and
        ``TimeoutError`` when the file stayed locked for ``timeout`` seconds.
        """
        cost = self._budget.check_tokens(tokens)

        def book(conn: sqlite3.Connection) -> float:
            row = conn.execute(
                "SELECT requests, tokens, paused FROM budget WHERE id = 0"
            ).fetchone()
            paused = _stored(row[2])
            # Read once the lock is held: bookings are ordered by the lock, and so are their times.
            tats, wait = self._budget.book(
                (_stored(row[0]), _stored(row[1])), self._clock(), cost, paused
            )
            conn.execute(
                "UPDATE budget SET requests = ?, tokens = ? WHERE id = 0",
                (None if tats[0] == NEVER else tats[0], None if tats[1] == NEVER else tats[1]),
            )
            return wait

        return self._transaction(book)

    def pause(self, seconds: float) -> None:
        """Hold every sharer's bookings for ``seconds`` from now (a 429's ``Retry-After``).

        Args:
            seconds: The server's delay.

        Raises:
            TypeError, ValueError: ``seconds`` is not a finite number >= 0.
            TimeoutError: The file stayed locked for ``timeout`` seconds.
        """
        delay = check_pause(seconds)

        def hold(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE budget SET paused = max(coalesce(paused, ?1), ?1) WHERE id = 0",
                (self._clock() + delay,),
            )

        self._transaction(hold)

    async def areserve(self, tokens: int = 0) -> float:
        """:meth:`reserve` in a worker thread (the file's lock may block)."""
        return await anyio.to_thread.run_sync(self.reserve, tokens)

    async def apause(self, seconds: float) -> None:
        """:meth:`pause` in a worker thread (the file's lock may block)."""
        await anyio.to_thread.run_sync(self.pause, seconds)

    def close(self) -> None:
        """Close this process's connection to the file; the next use opens it again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    raise self._locked(exc) from exc
                raise
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._roll_back(conn)
                raise
            return result

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The caller's own error is the one to raise; a connection in an unknown state is
            # dropped, and the next booking opens a fresh one.
            logger.warning("rolling back a booking in %r failed", self.path, exc_info=True)
            self._conn = None
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._conn is not None:
            return self._conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ValueError(f"cannot open the budget file {self.path!r}: {exc}") from exc
        try:
            self._prepare(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc):
                raise self._locked(exc) from exc
            raise ValueError(f"cannot use {self.path!r} as a budget file: {exc}") from exc
        except sqlite3.Error as exc:
            conn.close()
            raise ValueError(f"cannot use {self.path!r} as a budget file: {exc}") from exc
        self._conn = conn
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # WAL lets a writer append while others read, and a commit costs no fsync; where the
        # file system cannot do WAL, SQLite keeps its rollback journal and still serialises.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs a moment alone with the file; busy_timeout does not
                # cover it when another process is switching at the same time.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            # A file already set up needs no write lock: opening it never waits for a booking.
            if conn.execute("SELECT requests, tokens, paused FROM budget").fetchall():
                return
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO budget (id) VALUES (0)")
            conn.execute("SELECT requests, tokens, paused FROM budget").fetchall()
            conn.execute("COMMIT")
        except BaseException:
            self._roll_back(conn)
            raise

    def _locked(self, exc: sqlite3.OperationalError) -> TimeoutError:
        return TimeoutError(
            f"the budget file {self.path!r} stayed locked for {self._timeout:g} s ({exc})"
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._conn is not None:
            _inherited.append(self._conn)
            self._conn = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"FileRateLimiter({self.path!r}, {self._budget.describe()})"
