"""Progress reporting for batches: an optional tqdm bar and an ``on_progress(done, total)`` hook."""

from __future__ import annotations

import logging
from typing import Any

from ._config import ProgressCallback

__all__ = ["Progress"]

logger = logging.getLogger("resilient_llm")


class Progress:
    """Reports inputs done.

    ``total`` is the number of inputs when it is known up front (the inputs have a length); for a
    lazy iterable it is ``None`` until the end, when one last report gives the final count.

    Args:
        enabled: show a tqdm bar (``tqdm.auto``: a widget in notebooks, text in terminals).
        on_progress: called as ``on_progress(done, total)`` as inputs finish.
        total: the number of inputs, when known up front.
        description: the bar's label.

    Raises:
        ImportError: ``enabled`` but tqdm is not installed (named in the message).
    """

    def __init__(
        self,
        *,
        enabled: bool,
        on_progress: ProgressCallback | None,
        total: int | None,
        description: str,
    ) -> None:
        self._callback = on_progress
        self._total = total
        self._bar: Any = None
        self._closed = False
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError as exc:
                raise ImportError(
                    "progress=True needs tqdm: pip install 'resilient-llm[tqdm]'"
                ) from exc
            self._bar = tqdm(total=total, desc=description, unit="item", dynamic_ncols=True)
        self.done = 0

    def advance(self, count: int) -> None:
        """``count`` more inputs are done."""
        if count <= 0:
            return
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        self._report(self._total)

    def _report(self, total: int | None) -> None:
        if self._callback is None:
            return
        try:
            self._callback(self.done, total)
        except Exception:  # a broken progress hook must not lose the batch
            logger.error("on_progress hook %r raised; ignored", self._callback, exc_info=True)

    def finish(self, total: int) -> None:
        """The batch read all ``total`` inputs: a lazy batch reports its final count."""
        if self._closed:
            return
        if self._total is None:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
            self._report(total)
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._bar is not None:
            self._bar.close()
