"""The Redis limiter: sync and async clients, asyncio and trio, shared state, clean shutdown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest

from resilient_llm._limits import apause, areserve

from .conftest import require

SETTINGS = {"requests_per_minute": 600, "window": 3}
INTERVAL = (3 + 0.15) / 30


def _redis() -> Any:
    try:
        import redis as module
    except ImportError:
        require(False, "the redis package is not installed (pip install 'resilient-llm[redis]')")
    return module


def test_limiters_on_one_key_share_one_budget(redis_url: str, redis_key: str) -> None:
    from resilient_llm import RedisRateLimiter

    with RedisRateLimiter(redis_url, key=redis_key, **SETTINGS) as first:
        second = RedisRateLimiter(_redis().Redis.from_url(redis_url), key=redis_key, **SETTINGS)
        assert first.reserve() == 0.0
        assert second.reserve() == pytest.approx(INTERVAL, abs=0.05)
        second.pause(10)
        assert first.reserve() > 9.9
        other = RedisRateLimiter(redis_url, key=redis_key + ":other", **SETTINGS)
        assert other.reserve() == 0.0  # another key, another budget
        other.close()


def test_the_state_expires_once_it_no_longer_matters(redis_url: str, redis_key: str) -> None:
    from resilient_llm import RedisRateLimiter

    client = _redis().Redis.from_url(redis_url)
    limiter = RedisRateLimiter(client, key=redis_key, requests_per_minute=60, window=10)
    limiter.reserve()
    # One booking runs 1.05 s ahead of the clock; the state lives 2 s beyond that.
    assert 2000 < client.pttl(redis_key) <= 3050
    limiter.pause(30)
    assert 31_000 < client.pttl(redis_key) <= 32_050
    client.close()


def test_an_unreachable_redis_raises_the_redis_error() -> None:
    from resilient_llm import RedisRateLimiter

    redis_module = _redis()
    with (
        RedisRateLimiter("redis://127.0.0.1:1/0", **SETTINGS) as limiter,
        pytest.raises(redis_module.ConnectionError),
    ):
        limiter.reserve()


@pytest.mark.anyio
async def test_async_from_a_url_on_asyncio_and_trio(
    redis_url: str, redis_key: str, anyio_backend: str
) -> None:
    from resilient_llm import RedisRateLimiter

    async with RedisRateLimiter(redis_url, key=redis_key, **SETTINGS) as limiter:
        assert await areserve(limiter) == 0.0
        assert await areserve(limiter) == pytest.approx(INTERVAL, abs=0.05)
        await apause(limiter, 10)
        assert await limiter.areserve() > 9.9
        if anyio_backend == "asyncio":
            assert limiter._loops is not None
            assert len(limiter._loops) == 1  # redis.asyncio
        else:
            assert limiter._loops is not None
            assert len(limiter._loops) == 0  # a worker thread


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio: the next test
async def test_async_with_an_asyncio_client(redis_url: str, redis_key: str) -> None:
    from resilient_llm import RedisRateLimiter

    client = _redis().asyncio.Redis.from_url(redis_url)
    try:
        limiter = RedisRateLimiter(client, key=redis_key, **SETTINGS)
        assert await limiter.areserve(0) == 0.0
        assert await limiter.areserve(0) == pytest.approx(INTERVAL, abs=0.05)
        with pytest.raises(TypeError, match=r"was given a redis\.asyncio client"):
            limiter.reserve()
    finally:
        await client.aclose()


def test_an_asyncio_client_on_trio_is_refused_clearly(redis_url: str) -> None:
    from resilient_llm import RedisRateLimiter

    async def main() -> None:
        limiter = RedisRateLimiter(_redis().asyncio.Redis.from_url(redis_url), **SETTINGS)
        with pytest.raises(TypeError, match="runs on asyncio only"):
            await limiter.areserve()

    anyio.run(main, backend="trio")


def test_a_module_level_limiter_survives_consecutive_event_loops(
    redis_url: str, redis_key: str
) -> None:
    """Each loop's redis.asyncio client is closed on that loop when it ends: no warnings."""
    from resilient_llm import RedisRateLimiter

    limiter = RedisRateLimiter(redis_url, key=redis_key, **SETTINGS)

    async def book() -> float:
        return await limiter.areserve()

    waits = [anyio.run(book, backend="asyncio") for _ in range(3)]
    assert waits[0] == 0.0
    assert waits[1] > 0.0
    assert limiter._loops is not None
    assert len(limiter._loops) == 0  # all closed with their loop
    limiter.close()


@pytest.mark.parametrize("bad", [3, None, object()])
def test_a_bad_client_is_named(bad: object) -> None:
    _redis()
    from resilient_llm import RedisRateLimiter

    with pytest.raises(TypeError, match="client_or_url must be a redis:// URL"):
        RedisRateLimiter(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must be a non-empty str"):
        RedisRateLimiter("redis://127.0.0.1:1/0", key="")


def test_the_redis_package_is_imported_only_by_the_redis_limiter() -> None:
    script = """
    import sys
    import resilient_llm
    assert "redis" not in sys.modules, "imported with resilient_llm"
    sys.modules["redis"] = None  # as if it were not installed
    try:
        resilient_llm.RedisRateLimiter("redis://localhost")
    except ImportError as exc:
        print(exc)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "RedisRateLimiter needs the redis package: pip install 'resilient-llm[redis]'"
    )
