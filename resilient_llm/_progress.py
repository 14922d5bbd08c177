"""Progress reporting for batches: an optional tqdm bar and an ``on_progress(done, total)`` hook."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["Progress", "ProgressCallback"]

logger = logging.getLogger("resilient_llm")

ProgressCallback = Callable[[int, int], object]


class Progress:
    """Reports inputs done; ``total`` grows as a lazy iterable is read.

    Args:
        enabled: show a tqdm bar (``tqdm.auto``: a widget in notebooks, text in terminals).
        on_progress: called as ``on_progress(done, total)`` after each finished unit.
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
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable, not {type(on_progress).__name__}")
        self._callback = on_progress
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError as exc:
                raise ImportError(
                    "progress=True needs tqdm: pip install 'resilient-llm[tqdm]'"
                ) from exc
            self._bar = tqdm(total=total, desc=description, unit="item", dynamic_ncols=True)
        self._done = 0

    def advance(self, count: int, total: int) -> None:
        """``count`` more inputs are done, of ``total`` known so far."""
        if count <= 0:
            return
        self._done += count
        if self._bar is not None:
            if self._bar.total is not None and total > self._bar.total:
                self._bar.total = total
            self._bar.update(count)
        if self._callback is not None:
            try:
                self._callback(self._done, total)
            except Exception:  # a broken progress hook must not lose the batch
                logger.error("on_progress hook %r raised; ignored", self._callback, exc_info=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
