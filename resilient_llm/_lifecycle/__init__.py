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

from ._fork import PerProcess, fork_generation
from ._loops import LoopClients
from ._threads import ThreadClients

__all__ = ["LoopClients", "PerProcess", "ThreadClients", "fork_generation"]
