"""Which fault, if any, the next request gets: the scripted queues first, then a random draw."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterable, Sequence

from ._faults import DEFAULT_RANDOM_FAULTS, Fault

__all__ = ["FaultScript", "check_faults", "normalize_path"]


def normalize_path(path: str) -> str:
    """``embeddings``, ``/embeddings/`` or ``/v1/embeddings?x=1`` as ``/v1/embeddings``."""
    path = "/" + path.split("?", 1)[0].strip("/")
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path
    return path


def check_faults(faults: Iterable[object]) -> None:
    """Refuse anything that is not a `Fault` (`TypeError`)."""
    for fault in faults:
        if not isinstance(fault, Fault):
            raise TypeError(f"expected Fault, got {type(fault).__name__}")


class FaultScript:
    """Faults queued for the next requests (per path, or for any), and random ones.

    Thread-safe: tests script faults while the server's loop draws them.

    Args:
        fail_rate: Probability, within [0, 1], that a request no scripted fault handles gets a
            random one.
        random_faults: The faults drawn then (None: `DEFAULT_RANDOM_FAULTS`).
        rng: Draws whether a request fails and which fault.

    Raises:
        ValueError: `fail_rate` > 0 with no random fault.
    """

    def __init__(
        self, fail_rate: float, random_faults: Sequence[Fault] | None, rng: random.Random
    ) -> None:
        self._fail_rate = float(fail_rate)
        self._random: tuple[Fault, ...] = (
            DEFAULT_RANDOM_FAULTS if random_faults is None else tuple(random_faults)
        )
        if self._fail_rate and not self._random:
            raise ValueError("fail_rate > 0 needs at least one random fault")
        self._rng = rng
        self._lock = threading.Lock()
        self._any_path: deque[Fault] = deque()
        self._by_path: dict[str, deque[Fault]] = {}

    def add(self, faults: Sequence[Fault], path: str | None) -> None:
        """Queue `faults` for requests to `path` (None: to any path)."""
        check_faults(faults)
        with self._lock:
            if path is None:
                self._any_path.extend(faults)
            else:
                self._by_path.setdefault(normalize_path(path), deque()).extend(faults)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._any_path.clear()
            self._by_path.clear()

    def pending(self, path: str | None) -> int:
        """Faults still queued for `path`, or in every queue (None)."""
        with self._lock:
            if path is not None:
                return len(self._by_path.get(normalize_path(path), ()))
            return len(self._any_path) + sum(map(len, self._by_path.values()))

    def next(self, path: str) -> Fault | None:
        """The fault for a request to `path` (already normalized): its path's queue first."""
        with self._lock:
            queue = self._by_path.get(path)
            if queue:
                return queue.popleft()
            if self._any_path:
                return self._any_path.popleft()
        if self._fail_rate and self._rng.random() < self._fail_rate:
            return self._rng.choice(self._random)
        return None
