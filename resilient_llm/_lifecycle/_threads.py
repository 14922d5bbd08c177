"""Sync: one official client per thread, closed when the thread ends or at ``close()``."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .._exceptions import ClientClosedError
from . import _fork

__all__ = ["ThreadClients"]

logger = logging.getLogger("resilient_llm")

# -- sync: one client per thread -------------------------------------------------------------


class _SyncClosable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_SyncClosable)


def _close_quietly(client: _SyncClosable) -> None:
    try:
        client.close()
    except Exception:  # a failing close must not hide the caller's own error
        logger.warning("closing an official client failed", exc_info=True)


class _ThreadSlot:
    __slots__ = ("__weakref__", "client", "generation")

    def __init__(self, client: Any, generation: int) -> None:
        self.client = client
        self.generation = generation


class _ThreadState:
    """What the finalizers of a :class:`ThreadClients` share with it (never the registry).

    ``pid`` is the process whose ``lock`` this is: in a forked child, the finalizers of the
    parent's threads may run before the at-fork hook has replaced a lock one of them held
    (Python 3.13 clears dead threads first), so they check it before taking the lock.
    ``generation`` tells whether ``live`` still holds clients inherited from a parent.
    """

    __slots__ = ("__weakref__", "closed", "generation", "live", "lock", "pid")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.live: dict[int, Any] = {}  # id(slot) -> client, for every thread's client
        self.closed = False
        self.generation = _fork.generation

    def _reinit_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def release(self, key: int) -> None:
        """A thread ended: close its client."""
        if self.pid != os.getpid():
            return
        with self.lock:
            if self.generation != _fork.generation:  # inherited: dropped as a whole later
                return
            client = self.live.pop(key, None)
        if client is not None:
            _close_quietly(client)

    def close_all(self) -> None:
        """Close every thread's client (drop them unclosed if inherited from a parent)."""
        if self.pid != os.getpid():
            return
        with self.lock:
            clients = list(self.live.values())
            self.live.clear()
            inherited = self.generation != _fork.generation
            self.generation = _fork.generation
        if inherited:
            return
        for client in clients:
            _close_quietly(client)


class ThreadClients(Generic[S]):
    """One client per thread, built by ``factory`` on first use in that thread."""

    def __init__(self, factory: Callable[[], S]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._state = _ThreadState()
        _fork.fork_aware.add(self._state)
        # A client dropped without close() still closes its connections when collected; the
        # finalizer holds the shared state, not this object, so it does not keep it alive.
        weakref.finalize(self, self._state.close_all)

    @property
    def _lock(self) -> threading.Lock:
        return self._state.lock

    def get(self) -> S:
        """The calling thread's client, built on first use in that thread."""
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == _fork.generation and not self._state.closed:
            client: S = slot.client
            return client
        return self._create()

    def _create(self) -> S:
        state = self._state
        if state.closed:
            raise ClientClosedError("this client is closed; create a new one")
        if state.generation != _fork.generation:
            self._forget_inherited()
        client = self._factory()
        slot = _ThreadSlot(client, _fork.generation)
        key = id(slot)
        with state.lock:
            state.live[key] = client
        # Thread-local storage is dropped when its thread ends: that is our "thread ended" hook.
        weakref.finalize(slot, state.release, key)
        self._local.slot = slot
        return client

    def _forget_inherited(self) -> None:
        # In a forked child: the parent's connections are not ours to use. The forking thread's
        # own client is closed here (closing our copy of a socket sends nothing: no TLS
        # close_notify, no shutdown, so the parent is unaffected). The other threads' clients
        # are only dropped: their threads are gone and may have held their pools' locks.
        state = self._state
        own: _ThreadSlot | None = getattr(self._local, "slot", None)
        with state.lock:
            if state.generation == _fork.generation:
                return
            mine = state.live.get(id(own)) if own is not None else None
            state.live.clear()
            state.generation = _fork.generation
        if mine is not None:
            _close_quietly(mine)

    def __len__(self) -> int:
        return len(self._state.live)

    def close(self) -> None:
        """Close every thread's client; later use raises :class:`ClientClosedError`."""
        with self._state.lock:
            self._state.closed = True
        self._state.close_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._state.closed
