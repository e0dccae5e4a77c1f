"""Keys, auth and the meter on SQLite and PostgreSQL: hashing, revocation, expiry, limits, budgets, usage records."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmaas.api.protocol.admin import ApiKeyObject
from llmaas.errors import QuotaExceeded, RateLimited, RequestTooLarge, Unauthenticated
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store, now
from llmaas.store.tenancy import ApiKey
from llmaas.tenancy import keys
from llmaas.tenancy.auth import Authenticator
from llmaas.tenancy.keys import KeyDirectory
from llmaas.tenancy.limits import InProcessLimiter
from llmaas.tenancy.meter import TenancyMeter, month_period
from llmaas.tenancy.usage import UsageWriter


def _meter(store: Store) -> TenancyMeter:
    return TenancyMeter(
        store=store, directory=KeyDirectory(store), limiter=InProcessLimiter(), usage=UsageWriter(store)
    )


def test_keys_are_stored_hashed_and_shown_once(store: Store) -> None:
    row, secret = keys.create_key(store, project_id="default", name="ci")
    assert secret.startswith("sk-") and len(secret) > 40
    with store.session() as s:
        stored = s.get(ApiKey, row.id)
        assert stored.key_hash == keys.hash_secret(secret) and secret not in str(ApiKeyObject.of(stored).model_dump())
        assert stored.prefix == secret[:12]


def test_bootstrap_only_once(store: Store) -> None:
    first = keys.bootstrap(store)
    assert first is not None and keys.bootstrap(store) is None


def test_authenticate(store: Store) -> None:
    async def run() -> None:
        auth = Authenticator(KeyDirectory(store, ttl_s=0.0))
        row, secret = keys.create_key(store, project_id="default", name="a", models=["m1"])
        p = await auth.authenticate(f"Bearer {secret}")
        assert (p.project_id, p.key_id, p.is_admin, p.may_use("m1"), p.may_use("m2")) == (
            "default",
            row.id,
            False,
            True,
            False,
        )
        assert (await auth.authenticate(f"bearer  {secret} ")).key_id == row.id
        for header in [
            None,
            "",
            "Basic abc",
            "Bearer",
            f"Token {secret}",
            "Bearer sk-nope",
            "Bearer x' OR 1=1 --",
            "Bearer " + "sk-" + "a" * 5000,
            secret,
        ]:
            with pytest.raises(Unauthenticated) as err:
                await auth.authenticate(header)
            assert secret not in err.value.message
        with store.session() as s:
            tenancy_db.revoke_key(s, key_id=row.id)
        with pytest.raises(Unauthenticated, match="revoked"):
            await auth.authenticate(f"Bearer {secret}")
        old, old_secret = keys.create_key(store, project_id="default", name="old", expires_at=now() - 1)
        with pytest.raises(Unauthenticated, match="expired"):
            await auth.authenticate(f"Bearer {old_secret}")

    asyncio.run(run())


def test_revocation_takes_effect_within_cache_ttl(store: Store) -> None:
    async def run() -> None:
        directory = KeyDirectory(store, ttl_s=0.3)
        auth = Authenticator(directory)
        row, secret = keys.create_key(store, project_id="default", name="a")
        await auth.authenticate(f"Bearer {secret}")
        with store.session() as s:
            tenancy_db.revoke_key(s, key_id=row.id)
        await asyncio.sleep(0.35)
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {secret}")

    asyncio.run(run())


def test_meter_rpm_and_headers(store: Store) -> None:
    async def run() -> None:
        row, secret = keys.create_key(store, project_id="default", name="a", rpm=20)
        principal = await Authenticator(KeyDirectory(store)).authenticate(f"Bearer {secret}")
        meter = _meter(store)

        async def one(i: int) -> bool:
            try:
                r = await meter.admit(principal, model="m", route="chat", request_id=f"r{i}", tokens=5)
            except RateLimited as exc:
                assert exc.retry_after and exc.retry_after >= 1
                assert exc.headers["x-ratelimit-remaining-requests"] == "0"
                return False
            assert r.headers["x-ratelimit-limit-requests"] == "20"
            await meter.settle(r, prompt_tokens=2, completion_tokens=1, status=200, latency_s=0.01)
            return True

        results = await asyncio.gather(*(one(i) for i in range(50)))
        assert sum(results) == 20
        await meter.usage.close()
        with store.session() as s:
            rows = tenancy_db.usage_summary(s, project_id="default", group_by="key")
        assert rows == [
            {"group": row.id, "requests": 50, "prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60}
        ]

    asyncio.run(run())


def test_meter_budget_reserves_atomically_and_settles(store: Store) -> None:
    async def run() -> None:
        with store.session() as s:
            tenancy_db.create_project(s, project_id="acme", name="Acme", monthly_token_budget=1000)
        row, secret = keys.create_key(store, project_id="acme", name="a")
        principal = await Authenticator(KeyDirectory(store)).authenticate(f"Bearer {secret}")
        meter = _meter(store)

        async def one(i: int):
            try:
                return await meter.admit(principal, model="m", route="chat", request_id=f"r{i}", tokens=100)
            except QuotaExceeded as exc:
                assert exc.code == "insufficient_quota" and exc.retry_after
                return None

        reservations = await asyncio.gather(*(one(i) for i in range(30)))
        admitted = [r for r in reservations if r is not None]
        assert len(admitted) == 10  # 10 × 100 = the whole budget, never more
        for r in admitted:  # each used 30 of the 100 reserved tokens
            await meter.settle(r, prompt_tokens=10, completion_tokens=20, status=200, latency_s=0.1)
        with store.session() as s:
            assert tenancy_db.budget_used(s, scope="project:acme", period=month_period()) == 300
        assert await meter.admit(principal, model="m", route="chat", request_id="x", tokens=700)
        with pytest.raises(QuotaExceeded):
            await meter.admit(principal, model="m", route="chat", request_id="y", tokens=1)
        await meter.usage.close()
        with store.session() as s:
            assert tenancy_db.usage_summary(s, project_id="acme")[0]["requests"] == 30 + 1  # refusals are recorded too

    asyncio.run(run())


def test_tpm_too_large_and_key_limits_under_project(store: Store) -> None:
    async def run() -> None:
        with store.session() as s:
            tenancy_db.create_project(s, project_id="p", name="P", tpm=1000)
        _, secret = keys.create_key(store, project_id="p", name="a", tpm=300)
        principal = await Authenticator(KeyDirectory(store)).authenticate(f"Bearer {secret}")
        meter = _meter(store)
        with pytest.raises(RequestTooLarge, match="too large") as too_large:  # no wait helps: a 400, never a 429
            await meter.admit(principal, model="m", route="chat", request_id="r", tokens=301)
        assert too_large.value.status == 400 and too_large.value.code == "request_too_large"
        r = await meter.admit(principal, model="m", route="chat", request_id="r", tokens=300)
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
        await meter.settle(r, prompt_tokens=100, completion_tokens=0, status=200, latency_s=0)  # a dropped stream
        r2 = await meter.admit(principal, model="m", route="chat", request_id="r2", tokens=200)
        assert r2.headers["x-ratelimit-remaining-tokens"] == "0"
        assert (await meter.describe(principal))["limits"] == {"rpm": None, "tpm": 300, "monthly_token_budget": None}

    asyncio.run(run())


def test_usage_writer_flushes_on_close(store: Store) -> None:
    async def run() -> None:
        writer = UsageWriter(store, flush_s=60)
        writer.start()
        for i in range(100):
            writer.record(
                dict(
                    project_id="default",
                    key_id=None,
                    model="m",
                    route="chat",
                    request_id=str(i),
                    prompt_tokens=1,
                    completion_tokens=1,
                    status=200,
                    latency_ms=1,
                    created_at=now(),
                )
            )
        await writer.close()
        with store.session() as s:
            assert tenancy_db.usage_summary(s, project_id="default")[0]["requests"] == 100

    asyncio.run(run())


def test_usage_writer_close_waits_for_a_flush_under_way(store: Store) -> None:
    """close() during a timed flush must not return before that batch is in the database."""

    class SlowWriter(UsageWriter):
        def _write(self, rows: list[dict]) -> None:
            time.sleep(0.3)  # a slow database: the timed flush is still writing when close() comes
            super()._write(rows)

    async def run() -> None:
        writer = SlowWriter(store, flush_s=0.01)
        writer.start()
        writer.record(
            dict(
                project_id="default",
                key_id=None,
                model="m",
                route="chat",
                request_id="r",
                prompt_tokens=1,
                completion_tokens=1,
                status=200,
                latency_ms=1,
                created_at=now(),
            )
        )
        await asyncio.sleep(0.1)
        await writer.close()
        with store.session() as s:
            assert tenancy_db.usage_summary(s, project_id="default")[0]["requests"] == 1

    asyncio.run(run())


@pytest.mark.redis
def test_two_meters_sharing_redis_enforce_one_limit(store: Store) -> None:
    """Two replicas (two meters, two Redis clients, one database): 50 requests, rpm 20 → exactly 20 admitted."""
    from llmaas.tenancy.limits import RedisLimiter
    from tests.support.stores import REDIS_URL, redis_available, unique_prefix

    if not redis_available():
        pytest.skip("no Redis server")

    async def run() -> None:
        prefix = unique_prefix()
        _, secret = keys.create_key(store, project_id="default", name="a", rpm=20)
        meters = [
            TenancyMeter(
                store=store,
                directory=KeyDirectory(store),
                limiter=RedisLimiter(REDIS_URL, prefix=prefix),
                usage=UsageWriter(store),
            )
            for _ in range(2)
        ]
        principal = await Authenticator(KeyDirectory(store)).authenticate(f"Bearer {secret}")

        async def one(i: int) -> bool:
            try:
                await meters[i % 2].admit(principal, model="m", route="chat", request_id=str(i), tokens=1)
                return True
            except RateLimited:
                return False

        try:
            assert sum(await asyncio.gather(*(one(i) for i in range(50)))) == 20
        finally:
            for m in meters:
                await m.limiter.close()

    asyncio.run(run())


def test_redis_down_fails_closed() -> None:
    from llmaas.errors import Unavailable
    from llmaas.tenancy.limits import Check, RedisLimiter

    async def run() -> None:
        lim = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1
        try:
            with pytest.raises(Unavailable):
                await lim.acquire([Check("rpm:key:k", 1, 1)])
        finally:
            await lim.close()

    asyncio.run(run())


def test_revocation_by_another_process_takes_effect_within_one_second(store: Store) -> None:
    """Issue 14 #7: the key cache (default TTL) lets a revoked key through for at most KEY_CACHE_TTL_S = 1 s."""
    from llmaas.tenancy.keys import KEY_CACHE_TTL_S

    async def run() -> None:
        assert KEY_CACHE_TTL_S <= 1.0
        row, secret = keys.create_key(store, project_id="default", name="soon-revoked")
        auth = Authenticator(KeyDirectory(store))  # this replica's default cache
        await auth.authenticate(f"Bearer {secret}")  # cached now
        with store.session() as s:  # another process (the CLI, another replica) revokes it in the database
            tenancy_db.revoke_key(s, key_id=row.id)
        await asyncio.sleep(KEY_CACHE_TTL_S + 0.05)
        with pytest.raises(Unauthenticated, match="revoked"):
            await auth.authenticate(f"Bearer {secret}")

    asyncio.run(run())
