"""`RedisRateLimiter`: one budget for every process on every machine, kept in Redis.

Needs the ``redis`` package (``pip install 'resilient-llm[redis]'``), imported only when a
limiter is made: ``import resilient_llm`` never imports it.

Each booking is one Lua script, atomic on the server, doing the arithmetic of
:class:`~resilient_llm.LocalRateLimiter` on Redis's own clock (``TIME``), so the machines'
clocks need not agree. The state is one hash (``key``): the request and token buckets, and the
pause that a 429 sets for every sharer; it expires once it no longer matters.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import anyio.lowlevel
import anyio.to_thread

from .._closing import AsyncClosing, Closing
from .._lifecycle import LoopClients
from ._budget import Bucket, Budget, BudgetSettings, check_pause

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["LUA", "RedisRateLimiter"]

# KEYS[1]: the hash; fields r (requests tat), t (tokens tat), p (paused until); seconds.
# ARGV[1]: "reserve" or "pause"; ARGV[2]: tokens or seconds; ARGV[3..5] and ARGV[6..8]: the
# request and token buckets' interval, tolerance and capacity ("" when not set);
# ARGV[9]: "" (Redis's TIME), or a clock reading for the arithmetic tests.
# Bucket.book, line for line; numbers are stored and returned with 17 significant digits, which
# round-trip a double exactly.
LUA = """
local key = KEYS[1]
local now
if ARGV[9] ~= nil and ARGV[9] ~= '' then
  now = tonumber(ARGV[9])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local amount = tonumber(ARGV[2])
local state = redis.call('HMGET', key, 'r', 't', 'p')
local never = -math.huge
local paused = tonumber(state[3] or '') or never
local latest = paused
local result = 0
if ARGV[1] == 'pause' then
  if now + amount > paused then
    paused = now + amount
    redis.call('HSET', key, 'p', string.format('%.17g', paused))
  end
  latest = paused
  for i = 1, 2 do
    local tat = tonumber(state[i] or '')
    if tat and tat > latest then latest = tat end
  end
else
  result = math.max(0, paused - now)
  local fields = {'r', 't'}
  for i = 1, 2 do
    local interval = tonumber(ARGV[3 * i])
    local tat = tonumber(state[i] or '') or never
    if interval then
      local tolerance = tonumber(ARGV[3 * i + 1])
      local capacity = tonumber(ARGV[3 * i + 2])
      local cost = 1
      if i == 2 then cost = amount end
      local start = math.max(tat, now, paused + tolerance)
      local wait = start + math.min(cost, capacity) * interval - tolerance - now
      if wait > result then result = wait end
      tat = start + cost * interval
      redis.call('HSET', key, fields[i], string.format('%.17g', tat))
    end
    if tat > latest then latest = tat end
  end
end
-- Past its last time (plus a tolerance, at most 1 s) the state is the same as no state at all.
if latest > now then
  redis.call('PEXPIRE', key, math.ceil((latest - now + 2) * 1000))
end
return string.format('%.17g', result)
"""


def _bucket_args(bucket: Bucket | None) -> list[str]:
    if bucket is None:
        return ["", "", ""]
    return [repr(bucket.interval), repr(bucket.tolerance), repr(bucket.capacity)]


class _LoopRedis:
    """A ``redis.asyncio`` client made from a URL for one event loop, closed on that loop."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(url)
        self.script = self.client.register_script(LUA)

    async def close(self) -> None:
        await self.client.aclose()


class RedisRateLimiter(BudgetSettings, Closing, AsyncClosing):
    """Requests-per-minute and tokens-per-minute budgets shared through Redis.

    Give every worker on every machine the same Redis, ``key`` and budgets: together they stay
    within the budget, with the arithmetic of :class:`~resilient_llm.LocalRateLimiter`.

    Args:
        client_or_url: A ``redis://`` URL (the limiter makes and closes its own clients: a
            sync one, and a ``redis.asyncio`` one per asyncio event loop), a ``redis.Redis``
            client, or a ``redis.asyncio.Redis`` client (then only the async methods work).
            Clients you pass stay yours to close.
        key: The Redis key of this budget; one per account (or per model budget).
        requests_per_minute: The request budget, or ``None`` for no limit.
        tokens_per_minute: The token budget, or ``None`` for no limit.
        window: Seconds over which the budget is counted.

    Raises:
        ImportError: The ``redis`` package is not installed.
        TypeError, ValueError: A setting is invalid (the message names it).
    """

    def __init__(
        self,
        client_or_url: str | redis.Redis | redis.asyncio.Redis,
        *,
        key: str = "resilient_llm:rate",
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        window: float = 60.0,
    ) -> None:
        try:
            import redis
            import redis.asyncio
        except ImportError as exc:
            raise ImportError(
                "RedisRateLimiter needs the redis package: pip install 'resilient-llm[redis]'"
            ) from exc
        self._budget = Budget.of(requests_per_minute, tokens_per_minute, window)
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        if not key:
            raise ValueError("key must be a non-empty str")
        self.key = key
        self._args = [*_bucket_args(self._budget.requests), *_bucket_args(self._budget.tokens)]
        self._url: str | None = None
        self._sync: redis.Redis | None = None
        self._async: redis.asyncio.Redis | None = None
        self._loops: LoopClients[_LoopRedis] | None = None
        self._async_script: Any = None
        if isinstance(client_or_url, str):
            self._url = client_or_url
            self._sync = redis.Redis.from_url(client_or_url)
            url = client_or_url
            self._loops = LoopClients(lambda: _LoopRedis(url))
        elif isinstance(client_or_url, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            self._async = client_or_url
            self._async_script = client_or_url.register_script(LUA)
        elif isinstance(client_or_url, (redis.Redis, redis.RedisCluster)):
            self._sync = client_or_url
        else:
            raise TypeError(
                "client_or_url must be a redis:// URL, a redis.Redis or a redis.asyncio.Redis, "
                f"not {type(client_or_url).__name__}"
            )
        self._sync_script = None if self._sync is None else self._sync.register_script(LUA)

    def reserve(self, tokens: int = 0) -> float:
        """:meth:`RateLimiter.reserve`, for every sharer of ``key``.

        Raises ``TypeError`` / ``ValueError`` when ``tokens`` is not an int >= 0, and
        ``redis.RedisError`` when Redis could not be reached or failed.
        """
        return self._run("reserve", self._budget.check_tokens(tokens))

    def pause(self, seconds: float) -> None:
        """Hold every sharer's bookings for ``seconds`` from now (a 429's ``Retry-After``).

        Args:
            seconds: The server's delay.

        Raises:
            TypeError, ValueError: ``seconds`` is not a finite number >= 0.
            redis.RedisError: Redis could not be reached or failed.
        """
        self._run("pause", check_pause(seconds))

    async def areserve(self, tokens: int = 0) -> float:
        """:meth:`reserve` for async code: ``redis.asyncio`` on asyncio, a worker thread on trio.

        Raises:
            TypeError, ValueError: ``tokens`` is not an int >= 0.
            redis.RedisError: Redis could not be reached or failed.
        """
        return await self._arun("reserve", self._budget.check_tokens(tokens))

    async def apause(self, seconds: float) -> None:
        """:meth:`pause` for async code: ``redis.asyncio`` on asyncio, a worker thread on trio.

        Raises:
            TypeError, ValueError: ``seconds`` is not a finite number >= 0.
            redis.RedisError: Redis could not be reached or failed.
        """
        await self._arun("pause", check_pause(seconds))

    def close(self) -> None:
        """Close the sync client this limiter made from a URL (clients you passed stay open)."""
        if self._url is not None and self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        """Close every client this limiter made from a URL, each async one on its own loop."""
        if self._loops is not None:
            await self._loops.aclose()
        self.close()

    def _argv(self, op: str, amount: float, now: float | None) -> list[str]:
        return [op, repr(amount), *self._args, "" if now is None else repr(now)]

    def _run(self, op: str, amount: float, now: float | None = None) -> float:
        if self._sync_script is None:
            raise TypeError(
                "this RedisRateLimiter was given a redis.asyncio client: use `await "
                "limiter.areserve()` / `apause()`, or give it a URL or a redis.Redis client"
            )
        reply: Any = self._sync_script(keys=[self.key], args=self._argv(op, amount, now))
        return _seconds(reply)

    async def _arun(self, op: str, amount: float, now: float | None = None) -> float:
        on_asyncio = isinstance(
            anyio.lowlevel.current_token().native_token, asyncio.AbstractEventLoop
        )
        if on_asyncio and self._loops is not None:
            script: Any = self._loops.get().script
        elif on_asyncio and self._async is not None:
            script = self._async_script
        elif self._sync_script is not None:
            # redis.asyncio runs on asyncio only: elsewhere (trio) the sync client, in a thread.
            return await anyio.to_thread.run_sync(self._run, op, amount, now)
        else:
            raise TypeError(
                "a redis.asyncio client runs on asyncio only: give RedisRateLimiter a URL or a "
                "redis.Redis client to use it on trio"
            )
        reply = await script(keys=[self.key], args=self._argv(op, amount, now))
        return _seconds(reply)

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self.key!r}, {self._budget.describe()})"


def _seconds(reply: bytes | str) -> float:
    value = float(reply)
    if not math.isfinite(value):
        raise ValueError(f"the rate limit script answered {reply!r}")
    return value
