"""What `BatchJob` and `AsyncBatchJob` share besides their I/O: facts, checks, the decisions of
``wait`` (when to look again, how long to wait, when to give up). No network and no waiting here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, cast

import openai

from .._batch.results import BatchResult
from .._closing import AsyncClosing, Closing
from .._exceptions import DeadlineExceeded
from ._clients import is_client
from ._job import JobCore
from ._ops import Program
from ._progress import JobProgress

__all__ = ["JobFront", "Poll", "is_transient"]

logger = logging.getLogger("resilient_llm")

C = TypeVar("C")

_TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """A failed look at the batches worth trying again at the next poll."""
    if isinstance(exc, (openai.APIConnectionError, DeadlineExceeded)):
        return True
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        if body.get("code") == "insufficient_quota":
            return False
        return exc.status_code in _TRANSIENT_STATUSES or exc.status_code >= 500
    return False


class Poll:
    """The decisions of one ``wait``: the driver looks (a pass), asks, and sleeps `pause()`.

    Args:
        core: the job.
        timeout: give up waiting after this many seconds (``None``: never).
    """

    def __init__(self, core: JobCore, timeout: float | None) -> None:
        self._core = core
        self._timeout = timeout
        self._started = time.monotonic()
        self._interval = core.options.poll_interval
        self._failures = 0
        self._done = -1

    def retry(self, exc: Exception) -> bool:
        """Whether a failed look is worth another at the next poll (logged); ``False``: raise."""
        self._failures += 1
        if not is_transient(exc) or self._failures >= self._core.options.max_poll_errors:
            return False
        logger.warning(
            "batch job %s: looking at the batches failed (%s: %s); trying again in %.0f s",
            self._core.job_id,
            type(exc).__name__,
            exc,
            self._interval,
        )
        return True

    def finished(self, progress: JobProgress) -> bool:
        """Whether the job is finished after a look; else the next wait is chosen."""
        self._failures = 0
        if progress.finished:
            return True
        options = self._core.options
        # Back to the first interval when something moved, else a little longer.
        if progress.done != self._done:
            self._interval = options.poll_interval
        else:
            self._interval = min(self._interval * 1.5, options.max_poll_interval)
        self._done = progress.done
        return False

    def pause(self) -> float:
        """The seconds to wait before the next look.

        Raises:
            TimeoutError: the timeout has passed.
        """
        timeout = self._timeout
        if timeout is not None and time.monotonic() - self._started >= timeout:
            raise TimeoutError(
                f"batch job {self._core.job_id} is not finished after {timeout:g} s; its "
                "batches keep running: wait again later "
                f"(BatchJob.open(client, {str(self._core.store.path)!r}))"
            )
        return self._interval


class JobFront(Generic[C]):
    """The half of a job handle that is the same sync and async: its facts, its client check,
    and the programs its driver runs.
    """

    #: The handle's name (in its repr), the client it runs on (its class name and how it
    #: closes: the facades are not imported below them), and the twin for the other.
    _name: ClassVar[str]
    _client_name: ClassVar[str]
    _client_closing: ClassVar[type[Closing] | type[AsyncClosing]]
    _twin: ClassVar[str]

    def __init__(self, client: C, core: JobCore) -> None:
        self._client = client
        self._core = core
        self._scanned = False

    @classmethod
    def _checked(cls, client: object) -> C:
        expected = cls._client_name
        if not is_client(client, cls._client_closing):
            hint = f" (use {cls._twin})" if client is not None else ""
            article = "an" if expected[0] in "AEIOU" else "a"
            raise TypeError(
                f"client must be {article} {expected}, not {type(client).__name__}{hint}"
            )
        return cast(C, client)

    # ------------------------------------------------------------------ facts

    @property
    def id(self) -> str:
        """The job's id: the ``resilient_llm_job`` metadata of its batches."""
        return self._core.job_id

    @property
    def state_path(self) -> str:
        """The state file."""
        return str(self._core.store.path)

    @property
    def kind(self) -> str:
        """``"embeddings"`` or ``"chat"``."""
        return self._core.kind

    def __repr__(self) -> str:
        return f"{self._name}(id={self.id!r}, kind={self.kind!r}, state={self.state_path!r})"

    # ------------------------------------------------------------------ programs

    def _advance(self) -> Program[JobProgress]:
        """One pass over the job (the first of this handle lists the batches too)."""
        return self._scanning(self._core.engine.advance)

    def _cancelling(self) -> Program[JobProgress]:
        return self._scanning(self._core.engine.cancel)

    def _result(self) -> Program[BatchResult[Any]]:
        return self._core.engine.result()

    def _scanning(self, run: Callable[..., Program[JobProgress]]) -> Program[JobProgress]:
        progress = yield from run(scan=not self._scanned)
        self._scanned = True
        return progress

    def _poll(self, timeout: float | None) -> Poll:
        return Poll(self._core, timeout)

    def _base_url(self) -> str:
        return str(cast(Any, self._client).openai.base_url)
