"""Fork handling for the lifecycle: a generation counter, fresh locks in a child, PerProcess."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .._exceptions import ClientClosedError

__all__ = ["PerProcess", "fork_aware", "fork_generation", "generation"]

# -- fork ------------------------------------------------------------------------------------


class _ForkAware(Protocol):
    def _reinit_after_fork(self) -> None: ...


generation = 0
fork_aware: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global generation
    generation += 1
    # A thread of the parent may have held any of these locks: it does not exist here, so
    # the lock would stay held forever. The child is single-threaded now: fresh locks are safe.
    for holder in list(fork_aware):
        holder._reinit_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """Incremented in a child process after each ``os.fork()``."""
    return generation


T = TypeVar("T")


class PerProcess(Generic[T]):
    """One object per process, built by ``factory`` on first use and again in a forked child.

    Meant for objects that own threads, such as a worker pool: threads do not survive
    ``os.fork()``, so a child must neither use nor shut down the pool it inherited (its workers
    would never answer, and joining them would hang). The inherited object is dropped
    untouched; the child builds its own.

    Safe to share between threads: concurrent first calls build one object.

    Example:
        >>> pools = PerProcess(lambda: ThreadPoolExecutor(8))  # doctest: +SKIP
        >>> pools.get().submit(work)  # doctest: +SKIP
        >>> pools.close(lambda pool: pool.shutdown(wait=False))  # doctest: +SKIP
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        if not callable(factory):
            raise TypeError(f"PerProcess needs a callable factory, got {type(factory).__name__}")
        self._factory = factory
        self._lock = threading.Lock()
        # (fork generation, object): read without the lock, so set and cleared as one value.
        self._current: tuple[int, T] | None = None
        self._closed = False
        fork_aware.add(self)

    def get(self) -> T:
        """This process's object, built on first use.

        Raises:
            ClientClosedError: after :meth:`close`.
        """
        current = self._current
        if current is not None and current[0] == generation:
            return current[1]
        with self._lock:
            if self._closed:
                raise ClientClosedError("this client is closed; create a new one")
            current = self._current
            if current is None or current[0] != generation:
                current = (generation, self._factory())
                self._current = current
            return current[1]

    def close(self, closer: Callable[[T], object] | None = None) -> None:
        """Stop handing out objects; pass this process's one, if built, to ``closer``.

        An object inherited from a parent process is never passed to ``closer``. An error raised
        by ``closer`` propagates. Later calls to :meth:`get` raise :class:`ClientClosedError`.
        """
        with self._lock:
            self._closed = True
            current, self._current = self._current, None
        if closer is not None and current is not None and current[0] == generation:
            closer(current[1])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()
