"""Async: one official client per running event loop, only ever closed on that loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import types
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel

from .._exceptions import ClientClosedError
from . import _fork

__all__ = ["LoopClients"]

logger = logging.getLogger("resilient_llm")


class _AsyncClosable(Protocol):
    async def close(self) -> None: ...


A = TypeVar("A", bound=_AsyncClosable)

# -- async: one client per event loop --------------------------------------------------------

_OPEN, _CLOSING, _CLOSED, _RELEASED = "open", "closing", "closed", "released"


class _LoopState:
    """The slots of a :class:`LoopClients`, shared with its slots and finalizer."""

    __slots__ = ("__weakref__", "closed", "lock", "pid", "slots")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()  # whose lock this is: see _ThreadState
        self.slots: dict[object, _LoopSlot[Any]] = {}  # native loop token -> slot
        self.closed = False

    def _reinit_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def add(self, slot: _LoopSlot[Any]) -> bool:
        """Register ``slot`` for its loop; False once the registry is closed."""
        with self.lock:
            if self.closed:
                return False
            self.slots[slot.token] = slot
            return True

    def forget(self, slot: _LoopSlot[Any]) -> None:
        """Remove ``slot``; the caller holds ``lock``."""
        if self.slots.get(slot.token) is slot:
            del self.slots[slot.token]

    def release_dead(self) -> None:
        """Release, without awaiting, the clients of loops that can no longer close them."""
        for slot in list(self.slots.values()):
            if slot.loop_is_gone():
                slot.release()

    def release_dead_soon(self) -> None:
        """:meth:`release_dead` from a garbage collection: never waits on a lock this thread
        may hold (the collection can start anywhere, inside our own code too)."""
        if self.pid != os.getpid() or not self.lock.acquire(blocking=False):
            return
        try:
            dead = [slot for slot in self.slots.values() if slot.loop_is_gone()]
        finally:
            self.lock.release()
        for slot in dead:
            slot.release()

    def on_collected(self) -> None:
        # The registry was dropped without aclose(): a live loop still closes its client itself.
        if self.pid != os.getpid():
            return
        for slot in list(self.slots.values()):
            if slot.loop_is_gone() or not slot.request_close_threadsafe():
                slot.release()


class _LoopSlot(Generic[A]):
    """A client bound to one event loop and how to close it there.

    ``state`` goes ``open`` -> ``closing`` -> ``closed`` on the client's own loop, or ``open`` ->
    ``released`` when that loop can no longer run anything (closed, or left in a parent process).
    """

    __slots__ = ("client", "done", "generation", "keeper", "registry", "state", "token")

    def __init__(self, client: A, token: object, registry: _LoopState) -> None:
        self.client: A | None = client
        self.token = token
        self.registry = registry
        self.generation = _fork.generation
        self.state = _OPEN
        self.done: Any = None  # the backend's Event, set when the close has finished
        self.keeper: Any = None

    def loop_is_gone(self) -> bool:
        return self.generation != _fork.generation

    async def close_here(self) -> None:
        """Close the client; must run on the slot's own loop. Waits if a close is running."""
        if self.loop_is_gone():  # a forked child still running the parent's loop
            self.release()
            return
        with self.registry.lock:
            state = self.state
            if state == _OPEN:
                self.state = _CLOSING
                client, self.client = self.client, None
        if state == _CLOSING:
            await self.done.wait()
        if state != _OPEN:
            return
        try:
            if client is not None:
                await client.close()
        except Exception:  # closing must never crash the loop nor hide the caller's error
            logger.warning("closing an official async client failed", exc_info=True)
        finally:
            with self.registry.lock:
                self.state = _CLOSED
                self.registry.forget(self)
            self.done.set()
            self._stop_keeper()

    def release(self) -> None:
        """Forget the client without awaiting anything: its loop cannot run a close any more."""
        with self.registry.lock:
            self.registry.forget(self)
            if self.state != _OPEN:  # closed, or a close was cut short with its loop
                return
            self.state = _RELEASED
            self.client = None
        self._drop_keeper()

    def request_close_threadsafe(self) -> bool:
        """Ask the slot's loop, from any thread, to close it. False if that loop is gone."""
        raise NotImplementedError

    def _stop_keeper(self) -> None:
        """On the slot's own loop, once the client is closed: end the keeper."""
        raise NotImplementedError

    def _drop_keeper(self) -> None:
        """From any thread, the loop being gone: end the keeper without running anything there."""
        raise NotImplementedError


async def _asyncio_keeper(slot: _AsyncioSlot[Any]) -> AsyncGenerator[None, None]:
    """Parked on the slot's loop until the loop finalizes async generators as it shuts down."""
    try:
        yield
    finally:
        if slot.state == _OPEN:
            await slot.close_here()


class _AsyncioSlot(_LoopSlot[A]):
    __slots__ = ()

    def __init__(self, client: A, loop: asyncio.AbstractEventLoop, registry: _LoopState) -> None:
        super().__init__(client, loop, registry)
        self.done = asyncio.Event()
        keeper = _asyncio_keeper(self)
        try:
            # Its first step runs now: the running loop's firstiter hook registers it, so the
            # loop's shutdown_asyncgens() will close it (and with it our client) on this loop.
            keeper.asend(None).send(None)
        except StopIteration:
            self.keeper = keeper
        except Exception:  # a loop already past its shutdown: the sweep releases the client
            logger.debug("could not register the client with its event loop", exc_info=True)

    def loop_is_gone(self) -> bool:
        loop: asyncio.AbstractEventLoop = self.token  # type: ignore[assignment]
        return loop.is_closed() or super().loop_is_gone()

    def request_close_threadsafe(self) -> bool:
        loop: asyncio.AbstractEventLoop = self.token  # type: ignore[assignment]
        try:
            loop.call_soon_threadsafe(self._spawn_close)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _spawn_close(self) -> None:
        if self.state == _OPEN:
            loop: asyncio.AbstractEventLoop = self.token  # type: ignore[assignment]
            task = loop.create_task(self.close_here(), name="resilient_llm client close")
            # asyncio keeps only weak references to tasks: hold it until it is done.
            _closing_tasks.add(task)
            task.add_done_callback(_closing_tasks.discard)

    def _stop_keeper(self) -> None:
        self._drop_keeper()

    def _drop_keeper(self) -> None:
        keeper: types.AsyncGeneratorType[None, None] | None = self.keeper
        self.keeper = None
        if keeper is None or keeper.ag_running:  # it is the one closing us: it ends by itself
            return
        # Its finally clause awaits only while the slot is open, and it is not any more: one
        # step finishes it, on no loop at all. A finished generator is never finalized again.
        closing = keeper.aclose()
        try:
            closing.send(None)
        except StopIteration:
            return
        except RuntimeError:  # pragma: no cover - defensive: it was running after all
            logger.debug("the client's keeper could not be finished", exc_info=True)
            return
        closing.close()  # pragma: no cover - unreachable: the finally clause awaited


# Tasks closing a client at the request of another thread: asyncio keeps only weak references.
_closing_tasks: set[asyncio.Task[None]] = set()


async def _trio_keeper(slot: _TrioSlot[Any]) -> None:
    """A trio system task: cancelled by ``aclose()`` or when the run ends, it closes the client."""
    import trio

    try:
        with trio.CancelScope() as scope:
            slot.keeper = scope
            if slot.state == _OPEN and not slot.stop_requested:
                await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await slot.close_here()


class _TrioSlot(_LoopSlot[A]):
    __slots__ = ("stop_requested",)

    def __init__(self, client: A, token: object, registry: _LoopState) -> None:
        super().__init__(client, token, registry)
        import trio

        self.stop_requested = False  # a request may come before the keeper task has started
        self.done = trio.Event()
        trio.lowlevel.spawn_system_task(_trio_keeper, self, name="resilient_llm client keeper")

    def request_close_threadsafe(self) -> bool:
        try:
            self.token.run_sync_soon(self._stop_keeper)  # type: ignore[attr-defined]
        except RuntimeError:  # trio.RunFinishedError: the run is over
            return False
        return True

    def _stop_keeper(self) -> None:
        self.stop_requested = True
        if self.keeper is not None:
            self.keeper.cancel()

    def _drop_keeper(self) -> None:
        # Its run is over (then trio has already ended it) or was left in the parent process.
        self.keeper = None


_loop_states: weakref.WeakSet[_LoopState] = weakref.WeakSet()


def _release_dead_loops(phase: str, info: dict[str, int]) -> None:
    # A loop closed without aclose() gives no sign; a garbage collection is the last chance to
    # let its client and sockets go when no later call comes (and what frees them).
    if phase == "start":
        for state in list(_loop_states):
            state.release_dead_soon()


gc.callbacks.append(_release_dead_loops)


class LoopClients(Generic[A]):
    """One client per running event loop (asyncio or trio), built by ``factory``."""

    def __init__(self, factory: Callable[[], A]) -> None:
        self._factory = factory
        self._state = _LoopState()
        _fork.fork_aware.add(self._state)
        _loop_states.add(self._state)
        weakref.finalize(self, self._state.on_collected)

    @property
    def _lock(self) -> threading.Lock:
        return self._state.lock

    def get(self) -> A:
        """The current loop's client. Raises ``RuntimeError`` outside an event loop."""
        try:
            native = anyio.lowlevel.current_token().native_token
        except Exception as exc:  # anyio raises its own error type when no loop is running
            raise RuntimeError(
                "AsyncResilientClient must be used from inside a running event loop "
                "(asyncio or trio); use ResilientClient from synchronous code"
            ) from exc
        state = self._state
        if len(state.slots) > 1:
            state.release_dead()
        slot = state.slots.get(native)
        if slot is not None and slot.state == _OPEN and slot.generation == _fork.generation:
            client: A | None = slot.client
            if client is not None:
                return client
        return self._create(native)

    def _create(self, native: object) -> A:
        state = self._state
        if state.closed:
            raise ClientClosedError("this client is closed; create a new one")
        state.release_dead()
        client = self._factory()
        slot: _LoopSlot[A]
        if isinstance(native, asyncio.AbstractEventLoop):
            slot = _AsyncioSlot(client, native, state)
        else:
            slot = _TrioSlot(client, native, state)
        if not state.add(slot):  # aclose() ran meanwhile, in another thread
            slot.release()
            raise ClientClosedError("this client is closed; create a new one")
        return client

    def __len__(self) -> int:
        return len(self._state.slots)

    async def aclose(self) -> None:
        """Close every loop's client, each on its own loop; wait for the current loop's one."""
        state = self._state
        with state.lock:
            state.closed = True
            slots = list(state.slots.values())
        try:
            current: object = anyio.lowlevel.current_token().native_token
        except Exception:
            current = None
        for slot in slots:
            if slot.token is current and not slot.loop_is_gone():
                with anyio.CancelScope(shield=True):
                    await slot.close_here()
            elif slot.loop_is_gone() or not slot.request_close_threadsafe():
                # Its loop can run nothing any more, and awaiting here would touch another
                # loop's transports: let the client go.
                slot.release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._state.closed
