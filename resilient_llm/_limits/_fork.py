"""Limiters that hold a lock or a connection are made usable again in a forked child."""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["after_fork"]


class _ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_live: weakref.WeakSet[_ForkAware] = weakref.WeakSet()


def after_fork(limiter: _ForkAware) -> None:
    """Call ``limiter._after_fork_in_child()`` in every child forked from now on."""
    _live.add(limiter)


def _reset_in_child() -> None:
    # A thread of the parent may have held a limiter's lock at the fork: that thread does not
    # exist in the child, and nothing would ever release the copy of the lock.
    for limiter in list(_live):
        limiter._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)
