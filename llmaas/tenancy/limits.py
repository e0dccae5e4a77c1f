"""Requests-per-minute and tokens-per-minute limiters: in-process (default) or Redis (shared by every replica).

Each bucket is a one-minute window that opens at its first hit and counts what was admitted in it. `acquire` takes
several (bucket, limit, cost) checks (key and project, requests and tokens) and admits all or none of them in one
atomic step: under a lock in-process, in one Lua script on Redis (Redis runs scripts one at a time, and the script
reads Redis's own clock, so replicas agree). `adjust` corrects a token reservation to the actual count afterwards,
but only inside the window it was taken from. Budgets (monthly) are not here: they live in the database (`meter.py`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from llmaas.errors import RateLimited, Unavailable

WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class Check:
    bucket: str  # e.g. "rpm:key:key-…" (the limiter adds its own prefix)
    limit: int
    cost: int


@dataclass(frozen=True, slots=True)
class BucketState:
    bucket: str
    limit: int
    used: int  # after this request, if admitted
    window: int  # window start (ms): identifies the window for `adjust`
    reset_ms: int  # until the window closes

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    states: tuple[BucketState, ...]

    def blocking(self, checks: list[Check]) -> BucketState | None:
        """The first bucket that refused (its reset is the Retry-After)."""
        for check, state in zip(checks, self.states):
            if state.used + (0 if self.allowed else check.cost) > state.limit:
                return state
        return None


class Limiter(Protocol):
    async def acquire(self, checks: list[Check]) -> Decision: ...

    async def adjust(self, bucket: str, window: int, delta: int) -> None: ...

    async def close(self) -> None: ...


# --- in-process ------------------------------------------------------------------------------------------------


class InProcessLimiter:
    """Windows in a dict under a lock: exact within one process (the default for a single replica)."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, list[int]] = {}  # bucket -> [start_ms, used]
        self.max_buckets = max_buckets

    @staticmethod
    def _now_ms() -> int:
        return int(time.monotonic() * 1000)

    def _window(self, bucket: str, now: int) -> list[int]:
        w = self._windows.get(bucket)
        if w is None or now >= w[0] + WINDOW_MS:
            w = [now, 0]
        return w

    async def acquire(self, checks: list[Check]) -> Decision:
        with self._lock:
            now = self._now_ms()
            windows = [self._window(c.bucket, now) for c in checks]
            allowed = all(w[1] + c.cost <= c.limit for w, c in zip(windows, checks))
            if allowed:
                if len(self._windows) > self.max_buckets:  # drop closed windows; bounded memory
                    self._windows = {k: v for k, v in self._windows.items() if now < v[0] + WINDOW_MS}
                for w, c in zip(windows, checks):
                    w[1] += c.cost
                    self._windows[c.bucket] = w
            states = tuple(
                BucketState(c.bucket, c.limit, w[1], w[0], w[0] + WINDOW_MS - now) for w, c in zip(windows, checks)
            )
        return Decision(allowed, states)

    async def adjust(self, bucket: str, window: int, delta: int) -> None:
        with self._lock:
            w = self._windows.get(bucket)
            if w is not None and w[0] == window:
                w[1] = max(0, w[1] + delta)

    async def close(self) -> None:
        return None


# --- Redis -----------------------------------------------------------------------------------------------------

# KEYS: buckets. ARGV: window_ms, then limit_i, cost_i per bucket. Returns {allowed, start_i, used_i, reset_i ...}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local starts, counts = {}, {}
local ok = 1
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 's', 'c')
  local s, c = tonumber(v[1]), tonumber(v[2])
  if (not s) or now >= s + window then s = now; c = 0 end
  starts[i] = s; counts[i] = c
  if c + tonumber(ARGV[2 * i + 1]) > tonumber(ARGV[2 * i]) then ok = 0 end
end
local out = {ok}
for i = 1, #KEYS do
  local c = counts[i]
  if ok == 1 then
    c = c + tonumber(ARGV[2 * i + 1])
    redis.call('HSET', KEYS[i], 's', starts[i], 'c', c)
    redis.call('PEXPIRE', KEYS[i], starts[i] + window - now + 1000)
  end
  out[#out + 1] = starts[i]; out[#out + 1] = c; out[#out + 1] = starts[i] + window - now
end
return out
"""

# KEYS[1]: bucket. ARGV: window start, delta. Only the window the reservation came from is corrected.
_ADJUST = """
local s = redis.call('HGET', KEYS[1], 's')
if s and tonumber(s) == tonumber(ARGV[1]) then
  local c = redis.call('HINCRBY', KEYS[1], 'c', ARGV[2])
  if c < 0 then redis.call('HSET', KEYS[1], 'c', 0) end
end
return 0
"""


class RedisLimiter:
    """The same windows in Redis hashes, so every replica shares one count (`settings.redis_url`)."""

    def __init__(self, url: str, *, prefix: str = "llmaas:rl:") -> None:
        import redis
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.redis: Any = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._adjust = self.redis.register_script(_ADJUST)
        self._errors = (redis.RedisError, OSError)

    async def acquire(self, checks: list[Check]) -> Decision:
        keys = [self.prefix + c.bucket for c in checks]
        args: list[int] = [WINDOW_MS]
        for c in checks:
            args += [c.limit, c.cost]
        try:
            out = [int(x) for x in await self._acquire(keys=keys, args=args)]
        except self._errors as exc:  # fail closed: without the shared count no replica may admit
            raise Unavailable("The rate limiter is unavailable; please retry shortly.", retry_after=1) from exc
        states = tuple(
            BucketState(c.bucket, c.limit, out[1 + 3 * i + 1], out[1 + 3 * i], out[1 + 3 * i + 2])
            for i, c in enumerate(checks)
        )
        return Decision(bool(out[0]), states)

    async def adjust(self, bucket: str, window: int, delta: int) -> None:
        if delta:
            await self._adjust(keys=[self.prefix + bucket], args=[window, delta])

    async def close(self) -> None:
        await self.redis.aclose()


class NotFoundGuard:
    """Bounds not-found answers per key, so ids (files, jobs, models, keys) cannot be scanned at full speed.

    Every 404 a key receives is counted in a one-minute window of the limiter (shared across replicas with Redis);
    once a key has had `per_minute` of them, every request of that key gets 429 `rate_limit_exceeded` with
    `Retry-After` until the window closes, whether or not the id it names exists (so a 200 cannot be told from a 404
    while scanning). Callers without a key (auth off: the local admin) are not limited.
    """

    def __init__(self, limiter: Limiter, per_minute: int) -> None:
        self.limiter = limiter
        self.per_minute = per_minute

    @staticmethod
    def _bucket(key_id: str) -> str:
        return f"404:key:{key_id}"

    async def check(self, key_id: str | None) -> None:
        """Raise RateLimited while this key's not-found allowance of the current minute is used up."""
        if key_id is None:
            return
        # cost 0 against limit - 1: refused exactly when used >= per_minute (nothing is taken)
        decision = await self.limiter.acquire([Check(self._bucket(key_id), self.per_minute - 1, 0)])
        if not decision.allowed:
            wait_s = max(1, math.ceil(decision.states[0].reset_ms / 1000))
            raise RateLimited(
                f"Too many requests for objects that do not exist ({self.per_minute} per minute); "
                f"please try again in {wait_s}s.",
                retry_after=wait_s,
            )

    async def count(self, key_id: str | None) -> None:
        """One not-found answer for this key (past the allowance the count just stays full)."""
        if key_id is not None:
            await self.limiter.acquire([Check(self._bucket(key_id), self.per_minute, 1)])


def make_limiter(settings: Any) -> Limiter:
    """The shared Redis limiter when `settings.redis_url` is set, else the in-process one."""
    if getattr(settings, "redis_url", None):
        return RedisLimiter(settings.redis_url)
    return InProcessLimiter()


# --- headers ---------------------------------------------------------------------------------------------------


def format_reset(ms: int) -> str:
    """OpenAI's duration style: `17ms`, `1s`, `6m0s`."""
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    minutes, seconds = divmod(math.ceil(ms / 1000), 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def ratelimit_headers(requests: BucketState | None, tokens: BucketState | None) -> dict[str, str]:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest bucket of each kind."""
    headers: dict[str, str] = {}
    for kind, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(state.reset_ms)
    return headers
