"""The limiter protocol the facades call, and the async helpers that call any limiter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import anyio.to_thread

__all__ = ["RateLimiter", "apause", "areserve"]


@runtime_checkable
class RateLimiter(Protocol):
    """A request budget that clients share: in one process, on one machine or across machines.

    A client calls :meth:`reserve` before every HTTP attempt and sleeps for the seconds it
    returns; when a server answers 429 with ``Retry-After``, it calls :meth:`pause` so that
    every sharer holds back, not only the one that was refused.

    A limiter may also offer ``async def areserve(tokens=0) -> float`` and
    ``async def apause(seconds) -> None``; :func:`areserve` and :func:`apause` use them when
    present and run the blocking methods in a worker thread otherwise.
    """

    def reserve(self, tokens: int = 0) -> float:
        """Book one request costing ``tokens`` tokens now.

        The booking is made at once, whether or not the caller then waits: callers that book
        one after another are spaced out in booking order.

        Args:
            tokens: The request's token cost (0 when no token budget is set or known).

        Returns:
            Seconds the caller must wait before sending the request.
        """
        ...

    def pause(self, seconds: float) -> None:
        """A server answered 429 with ``Retry-After: seconds``: every sharer waits that long.

        Args:
            seconds: The server's delay, counted from now.
        """
        ...


async def areserve(limiter: RateLimiter, tokens: int = 0) -> float:
    """:meth:`RateLimiter.reserve` from async code, without blocking the event loop.

    Args:
        limiter: Any limiter; its own ``areserve`` is used when it has one.
        tokens: The request's token cost.

    Returns:
        Seconds to wait before sending the request.
    """
    native: Callable[[int], Awaitable[float]] | None = getattr(limiter, "areserve", None)
    if native is not None:
        return await native(tokens)
    return await anyio.to_thread.run_sync(limiter.reserve, tokens)


async def apause(limiter: RateLimiter, seconds: float) -> None:
    """:meth:`RateLimiter.pause` from async code, without blocking the event loop.

    Args:
        limiter: Any limiter; its own ``apause`` is used when it has one.
        seconds: The server's ``Retry-After``.
    """
    native: Callable[[float], Awaitable[None]] | None = getattr(limiter, "apause", None)
    if native is not None:
        await native(seconds)
        return
    await anyio.to_thread.run_sync(limiter.pause, seconds)
