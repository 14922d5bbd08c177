"""Rate limiters: one request/token budget for a process, a machine, or many machines.

The facades call any :class:`RateLimiter` before every HTTP attempt (async code through
:func:`areserve` / :func:`apause`). Three implementations share one arithmetic (``_budget``):
:class:`LocalRateLimiter` (in-process), :class:`FileRateLimiter` (a SQLite file, for the
processes of one machine) and ``redis.RedisRateLimiter`` (for many machines; needs ``redis``,
imported only when one is made).
"""

from __future__ import annotations

from ._file import FileRateLimiter
from ._local import LocalRateLimiter
from ._protocol import RateLimiter, apause, areserve
from .redis import RedisRateLimiter

__all__ = [
    "FileRateLimiter",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "apause",
    "areserve",
]
