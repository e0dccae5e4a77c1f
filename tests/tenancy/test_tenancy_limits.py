"""Rate limiters for real: 50 concurrent requests against a limit of 20 admit exactly 20, in-process and on Redis;
two Redis limiters (two processes) share one global count."""

from __future__ import annotations

import asyncio

import pytest

from llmaas.tenancy.limits import Check, InProcessLimiter, RedisLimiter, format_reset, ratelimit_headers
from tests.support.stores import REDIS_URL, redis_available, unique_prefix


def _redis(prefix: str) -> RedisLimiter:
    if not redis_available():
        pytest.skip("no Redis server at 127.0.0.1:6379")
    return RedisLimiter(REDIS_URL, prefix=prefix)


async def _burst(limiters: list, n: int = 50, limit: int = 20) -> int:
    async def one(i: int) -> bool:
        d = await limiters[i % len(limiters)].acquire([Check("rpm:key:k", limit, 1)])
        return d.allowed

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results)


def test_in_process_exact() -> None:
    assert asyncio.run(_burst([InProcessLimiter()])) == 20


@pytest.mark.redis
def test_redis_exact() -> None:
    async def run() -> int:
        lim = _redis(unique_prefix())
        try:
            return await _burst([lim])
        finally:
            await lim.close()

    assert asyncio.run(run()) == 20


@pytest.mark.redis
def test_two_redis_limiters_share_one_global_limit() -> None:
    async def run() -> int:
        prefix = unique_prefix()
        a, b = _redis(prefix), _redis(prefix)
        try:
            return await _burst([a, b])
        finally:
            await a.close()
            await b.close()

    assert asyncio.run(run()) == 20


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_all_or_nothing_and_adjust(backend: str) -> None:
    async def run() -> None:
        lim = InProcessLimiter() if backend == "memory" else _redis(unique_prefix())
        try:
            checks = [Check("rpm:key:k", 10, 1), Check("tpm:key:k", 100, 60)]
            first = await lim.acquire(checks)
            assert first.allowed and first.states[1].used == 60
            second = await lim.acquire(checks)  # 120 tokens > 100: refused, and the rpm bucket is untouched
            assert not second.allowed
            assert second.blocking(checks).bucket == "tpm:key:k"
            third = await lim.acquire([Check("rpm:key:k", 10, 1)])
            assert third.states[0].used == 2
            await lim.adjust("tpm:key:k", first.states[1].window, -50)  # settle: only 10 tokens were used
            fourth = await lim.acquire(checks)
            assert fourth.allowed and fourth.states[1].used == 70
            await lim.adjust("tpm:key:k", first.states[1].window + 1, -70)  # another window: ignored
            fifth = await lim.acquire([Check("tpm:key:k", 100, 0)])
            assert fifth.states[0].used == 70
            assert 0 < fifth.states[0].reset_ms <= 60_000
        finally:
            await lim.close()

    asyncio.run(run())


def test_headers_format() -> None:
    assert format_reset(17) == "17ms"
    assert format_reset(1000) == "1s"
    assert format_reset(360_000) == "6m0s"
    from llmaas.tenancy.limits import BucketState

    h = ratelimit_headers(BucketState("b", 20, 5, 0, 1500), None)
    assert h == {
        "x-ratelimit-limit-requests": "20",
        "x-ratelimit-remaining-requests": "15",
        "x-ratelimit-reset-requests": "2s",
    }


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_not_found_guard_cuts_a_key_off_across_replicas(backend: str) -> None:
    """Issue 14 #8: after `per_minute` 404s a key is refused (429 + Retry-After) on every replica sharing the limiter."""
    from llmaas.errors import RateLimited
    from llmaas.tenancy.limits import NotFoundGuard

    async def run() -> None:
        prefix = unique_prefix()
        limiters = [InProcessLimiter()] if backend == "memory" else [_redis(prefix), _redis(prefix)]
        guards = [NotFoundGuard(lim, per_minute=5) for lim in limiters]
        try:
            for i in range(5):
                await guards[0].check("k")
                await guards[i % len(guards)].count("k")  # 404s answered by either replica
            for g in guards:
                with pytest.raises(RateLimited) as info:
                    await g.check("k")
                assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
                await g.check("other-key")  # other keys are unaffected
                await g.check(None)  # no key (auth off): never limited
            for _ in range(10):
                await guards[0].count("k")  # past the allowance the count just stays full
        finally:
            for lim in limiters:
                await lim.close()

    asyncio.run(run())
