"""One official client per thread (sync) or per running event loop (async).

Sync: each thread builds its own ``openai.OpenAI`` on first use; it is closed when the thread
ends (its thread-local slot is collected) or at ``close()``.

Async: each event loop builds its own ``openai.AsyncOpenAI`` on first use, together with a small
keeper task on that loop. The keeper is the only code that ever closes that client, so the close
always runs on the loop that made it:

- ``aclose()`` on that loop cancels the keeper and waits for it;
- ``aclose()`` on another loop asks the keeper's loop, thread-safely, to cancel it;
- when the loop ends (``asyncio.run`` cancels leftover tasks; trio cancels system tasks), the
  keeper is cancelled and closes the client while its loop still runs. So a module-level client
  used by two consecutive ``asyncio.run`` calls, or by many threads each with its own loop,
  never closes a transport on a dead loop.

After ``os.fork()`` the child discards every inherited client and builds fresh ones: it never
sends on the parent's connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel

from ._exceptions import ClientClosedError

__all__ = ["LoopClients", "ThreadClients", "fork_generation"]

logger = logging.getLogger("resilient_llm")

_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """Incremented in a child process after each ``os.fork()``."""
    return _fork_generation


class _SyncClosable(Protocol):
    def close(self) -> None: ...


class _AsyncClosable(Protocol):
    async def close(self) -> None: ...


S = TypeVar("S", bound=_SyncClosable)
A = TypeVar("A", bound=_AsyncClosable)


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


def _close_all(lock: threading.Lock, live: dict[int, Any]) -> None:
    with lock:
        clients = list(live.values())
        live.clear()
    for client in clients:
        _close_quietly(client)


def _release_slot(owner: weakref.ref[ThreadClients[Any]], key: int) -> None:
    registry = owner()
    if registry is not None:
        registry._release(key)


class ThreadClients(Generic[S]):
    """One client per thread, built by ``factory`` on first use in that thread."""

    def __init__(self, factory: Callable[[], S]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._live: dict[int, S] = {}
        self._closed = False
        self._generation = _fork_generation
        # A client dropped without close() still closes its connections when collected; the
        # finalizer holds the registry, not this object, so it does not keep it alive.
        weakref.finalize(self, _close_all, self._lock, self._live)

    def get(self) -> S:
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == _fork_generation and not self._closed:
            client: S = slot.client
            return client
        return self._create()

    def _create(self) -> S:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new one")
        with self._lock:
            if self._generation_changed():
                self._forget_inherited()
        client = self._factory()
        slot = _ThreadSlot(client, _fork_generation)
        key = id(slot)
        with self._lock:
            self._live[key] = client
        # Thread-local storage is dropped when its thread ends: that is our "thread ended" hook.
        weakref.finalize(slot, _release_slot, weakref.ref(self), key)
        self._local.slot = slot
        return client

    def _generation_changed(self) -> bool:
        return self._generation != _fork_generation

    def _forget_inherited(self) -> None:
        # In a forked child: the parent's connections are not ours. Closing our copies of the
        # sockets sends nothing (no TLS close_notify, no shutdown), so the parent is unaffected.
        inherited = list(self._live.values())
        self._live.clear()
        for client in inherited:
            _close_quietly(client)
        self._generation = _fork_generation

    def _release(self, key: int) -> None:
        with self._lock:
            client = self._live.pop(key, None)
        if client is not None:
            _close_quietly(client)

    def __len__(self) -> int:
        return len(self._live)

    def close(self) -> None:
        """Close every thread's client; later use raises :class:`ClientClosedError`."""
        with self._lock:
            self._closed = True
        _close_all(self._lock, self._live)

    @property
    def closed(self) -> bool:
        return self._closed


class _LoopSlot(Generic[A]):
    """A client bound to one event loop, and the keeper task that will close it there."""

    __slots__ = ("_close_requested", "_scope", "_task", "client", "done", "native_token")

    def __init__(self, client: A, native_token: object) -> None:
        self.client = client
        self.native_token = native_token
        self.done = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._close_requested = False
        self._task: object = None  # asyncio needs a strong reference to the keeper task

    def request_close(self) -> None:
        """Ask the keeper to close the client; must run on the slot's own loop."""
        self._close_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def request_close_threadsafe(self) -> bool:
        """Ask the slot's loop, from any thread, to close it. False if that loop is gone."""
        token = self.native_token
        try:
            if isinstance(token, asyncio.AbstractEventLoop):
                token.call_soon_threadsafe(self.request_close)
            else:
                token.run_sync_soon(self.request_close)  # type: ignore[attr-defined]
        except RuntimeError:  # asyncio: loop closed; trio: RunFinishedError is a RuntimeError
            return False
        return True


class LoopClients(Generic[A]):
    """One client per running event loop (asyncio or trio), built by ``factory``."""

    def __init__(self, factory: Callable[[], A]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._slots: dict[object, _LoopSlot[A]] = {}
        self._closed = False

    def get(self) -> A:
        """The current loop's client. Raises ``RuntimeError`` outside an event loop."""
        try:
            native = anyio.lowlevel.current_token().native_token
        except Exception as exc:  # anyio raises its own error type when no loop is running
            raise RuntimeError(
                "AsyncResilientClient must be used from inside a running event loop "
                "(asyncio or trio); use ResilientClient from synchronous code"
            ) from exc
        slot = self._slots.get(native)
        if slot is not None and not slot._close_requested:
            return slot.client
        return self._create(native)

    def _create(self, native: object) -> A:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new one")
        slot = _LoopSlot(self._factory(), native)
        with self._lock:
            self._slots[native] = slot
        if isinstance(native, asyncio.AbstractEventLoop):
            slot._task = native.create_task(self._keep(slot), name="resilient_llm client keeper")
        else:
            import trio

            trio.lowlevel.spawn_system_task(self._keep, slot, name="resilient_llm client keeper")
        return slot.client

    async def _keep(self, slot: _LoopSlot[A]) -> None:
        try:
            if not slot._close_requested:
                with anyio.CancelScope() as scope:
                    slot._scope = scope
                    await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await slot.client.close()
                except Exception:  # the keeper must never crash its loop
                    logger.warning("closing an official async client failed", exc_info=True)
            with self._lock:
                if self._slots.get(slot.native_token) is slot:
                    del self._slots[slot.native_token]
            slot.done.set()

    def __len__(self) -> int:
        return len(self._slots)

    async def aclose(self) -> None:
        """Close every loop's client, each on its own loop; wait for the current loop's one."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
        try:
            current: object = anyio.lowlevel.current_token().native_token
        except Exception:
            current = None
        for slot in slots:
            if slot.native_token is current:
                slot.request_close()
                await slot.done.wait()
            elif not slot.request_close_threadsafe():
                # Its loop ended without cancelling its tasks: nothing can be awaited there any
                # more, and awaiting here would touch another loop's transports. Let it go.
                with self._lock:
                    self._slots.pop(slot.native_token, None)

    @property
    def closed(self) -> bool:
        return self._closed
