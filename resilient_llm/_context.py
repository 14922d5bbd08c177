"""The only ambient state of the library: the scope a call runs in.

One context variable carries the wall-clock deadline of the current attempt (the HTTP transport
reads it: it has no other way to learn it), whether the sync batch it belongs to was cancelled (so
a blocked socket read can stop), and, inside a ``map`` item, the batch that counts the requests
made on the item's behalf. Everything else is passed explicitly.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Scope", "current_scope", "deadline_remaining", "scoped"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Where the current code runs.

    Attributes:
        deadline_at: ``time.monotonic()`` by which the current attempt must end (None: no bound).
        cancel: set when the sync batch this code works for was abandoned.
        sink: the batch that counts requests made here (inside a ``map`` item), or None.
    """

    deadline_at: float | None = None
    cancel: threading.Event | None = None
    sink: Any = None


_EMPTY = Scope()
_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar(
    "resilient_llm_scope", default=_EMPTY
)


def current_scope() -> Scope:
    """The scope of the running code."""
    return _scope.get()


def deadline_remaining() -> float | None:
    """Seconds left before the current deadline (None: no deadline)."""
    deadline_at = _scope.get().deadline_at
    return None if deadline_at is None else deadline_at - time.monotonic()


@contextmanager
def scoped(**changes: Any) -> Iterator[Scope]:
    """Run a block in the current scope with ``changes`` applied (a deadline only ever tightens)."""
    outer = _scope.get()
    deadline_at = changes.get("deadline_at", outer.deadline_at)
    if outer.deadline_at is not None and (deadline_at is None or outer.deadline_at < deadline_at):
        deadline_at = outer.deadline_at
    inner = replace(outer, **{**changes, "deadline_at": deadline_at})
    token = _scope.set(inner)
    try:
        yield inner
    finally:
        _scope.reset(token)
