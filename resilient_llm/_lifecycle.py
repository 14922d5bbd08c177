"""One official client per thread (sync) or per event loop (async), and per process.

Sync (:class:`ThreadClients`): each thread builds its own ``openai.OpenAI`` on first use; it is
closed when the thread ends (its thread-local slot is collected) or at ``close()``.

Async (:class:`LoopClients`): each event loop builds its own ``openai.AsyncOpenAI`` on first
use. That client is only ever closed on the loop that made it, and a loop that ends keeps
nothing alive:

- ``aclose()`` on that loop closes it there; ``aclose()`` on another loop asks the client's loop,
  thread-safely, to close it.
- asyncio: with the client comes a small async generator, started on its loop, that asyncio
  finalizes when the loop shuts down: ``asyncio.run`` and ``asyncio.Runner`` (and anyone who
  awaits ``loop.shutdown_asyncgens()`` before ``loop.close()``) close the client on that loop,
  before it closes. No task is left behind, so nothing is "destroyed but pending".
- trio: a system task does the same; trio cancels system tasks when its run ends.
- A loop closed without that shutdown (``run_until_complete`` then ``close()``) cannot run
  anything any more. The next ``get()`` from any loop, ``aclose()``, or the registry being
  collected releases its client without awaiting anything: the client is dropped, and asyncio
  closes the sockets it left on the dead loop when they are collected (asyncio's own
  ``unclosed transport`` ResourceWarning, shown in development mode, says the loop was closed
  without shutting down).

So a module-level client serves consecutive ``asyncio.run`` calls, threads that each run a loop,
or a loop per task (Celery), without ever touching a transport from a loop that does not own it.

Fork (:func:`fork_generation`, :class:`PerProcess`): a child process never uses what it
inherited. Every registry here builds fresh objects in a child on first use. Of the inherited
clients it closes only the forking thread's own sync client (closing a copy of a socket sends
nothing to the server); it drops the others without calling into them: the parent's other
threads do not exist in the child and may have held their pools' locks, and closing an async
client would shut down (send EOF on) connections the parent still uses. The garbage collector
closes the child's copies of their sockets. :class:`PerProcess` holds one object per process,
such as a worker pool, whose threads do not survive a fork. Every lock of this module is created
anew in a child, so a fork while another thread held one cannot deadlock the child.
"""

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

from ._exceptions import ClientClosedError

__all__ = ["LoopClients", "PerProcess", "ThreadClients", "fork_generation"]

logger = logging.getLogger("resilient_llm")


# -- fork ------------------------------------------------------------------------------------


class _ForkAware(Protocol):
    def _reinit_after_fork(self) -> None: ...


_fork_generation = 0
_fork_aware: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1
    # A thread of the parent may have held any of these locks: it does not exist here, so
    # the lock would stay held forever. The child is single-threaded now: fresh locks are safe.
    for holder in list(_fork_aware):
        holder._reinit_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_generation() -> int:
    """Incremented in a child process after each ``os.fork()``."""
    return _fork_generation


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
        _fork_aware.add(self)

    def get(self) -> T:
        """This process's object, built on first use.

        Raises:
            ClientClosedError: after :meth:`close`.
        """
        current = self._current
        if current is not None and current[0] == _fork_generation:
            return current[1]
        with self._lock:
            if self._closed:
                raise ClientClosedError("this client is closed; create a new one")
            current = self._current
            if current is None or current[0] != _fork_generation:
                current = (_fork_generation, self._factory())
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
        if closer is not None and current is not None and current[0] == _fork_generation:
            closer(current[1])

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _reinit_after_fork(self) -> None:
        self._lock = threading.Lock()


# -- sync: one client per thread -------------------------------------------------------------


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
        self.generation = _fork_generation

    def _reinit_after_fork(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def release(self, key: int) -> None:
        """A thread ended: close its client."""
        if self.pid != os.getpid():
            return
        with self.lock:
            if self.generation != _fork_generation:  # inherited: dropped as a whole later
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
            inherited = self.generation != _fork_generation
            self.generation = _fork_generation
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
        _fork_aware.add(self._state)
        # A client dropped without close() still closes its connections when collected; the
        # finalizer holds the shared state, not this object, so it does not keep it alive.
        weakref.finalize(self, self._state.close_all)

    @property
    def _lock(self) -> threading.Lock:
        return self._state.lock

    def get(self) -> S:
        """The calling thread's client, built on first use in that thread."""
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.generation == _fork_generation and not self._state.closed:
            client: S = slot.client
            return client
        return self._create()

    def _create(self) -> S:
        state = self._state
        if state.closed:
            raise ClientClosedError("this client is closed; create a new one")
        if state.generation != _fork_generation:
            self._forget_inherited()
        client = self._factory()
        slot = _ThreadSlot(client, _fork_generation)
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
            if state.generation == _fork_generation:
                return
            mine = state.live.get(id(own)) if own is not None else None
            state.live.clear()
            state.generation = _fork_generation
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
        self.generation = _fork_generation
        self.state = _OPEN
        self.done: Any = None  # the backend's Event, set when the close has finished
        self.keeper: Any = None

    def loop_is_gone(self) -> bool:
        return self.generation != _fork_generation

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
        _fork_aware.add(self._state)
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
        if slot is not None and slot.state == _OPEN and slot.generation == _fork_generation:
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
