"""A running Batch API job's progress on the command line: a bar on a terminal, else a line when
it moved; and its batches in a few words."""

from __future__ import annotations

import threading
import time
from typing import Any

from .._messages import describe
from ..batch_api import BatchJob, JobProgress
from .console import Console

__all__ = ["Watch", "shards_text"]

# Without a terminal: a progress line when the job moved, at most this often.
LINE_EVERY = 10.0


def shards_text(progress: JobProgress) -> str:
    """How many of the job's batches are at each stage, e.g. ``2 collected, 1 submitted``."""
    return ", ".join(f"{count} {stage}" for stage, count in sorted(progress.shards.items()))


class Watch:
    """A running job's progress, read from its state file (no network) while `wait` runs: a
    bar on a terminal, else a line when it moved, at most every :data:`LINE_EVERY` seconds."""

    PERIOD = 0.5

    def __init__(self, job: BatchJob, console: Console, bar: Any, *, base: int) -> None:
        self._job = job
        self._console = console
        self._bar = bar
        self._base = base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-progress", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last: tuple[int, str] | None = None
        shown_at = -LINE_EVERY
        while True:
            try:
                progress = self._job.progress()
            except Exception as exc:  # the display only; the job goes on
                self._console.say(f"cannot show the job's progress: {describe(exc)}")
                return
            now = (progress.done, shards_text(progress))
            if self._bar is not None:
                self._bar.update(self._base + progress.done - self._bar.n)
                self._bar.set_postfix_str(now[1], refresh=False)
            elif last is None:
                last = now  # the job as it was made or left: nothing happened yet
            elif now != last and time.monotonic() - shown_at >= LINE_EVERY:
                self._console.say(
                    f"batch job {progress.job_id}: {progress.done:,} of {progress.total:,} "
                    f"inputs done; batches: {now[1]}"
                )
                last, shown_at = now, time.monotonic()
            if self._stop.wait(self.PERIOD):
                return
