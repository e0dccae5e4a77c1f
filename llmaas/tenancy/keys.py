"""API keys: made here (shown once), stored only as a sha256 hash, looked up through a short in-process cache.

A secret is `sk-` + `secrets.token_urlsafe(32)` (256 random bits), so a single unsalted sha256 is a safe verifier
(no dictionary to attack); lookup is by hash and the final comparison uses `hmac.compare_digest`. The first 12
characters are kept as a display prefix for listings and logs.

`KeyDirectory` caches key and project records for `ttl_s` (default `KEY_CACHE_TTL_S` = 1 s, bounded LRU), so
authentication hits the database at most once a second per active key, not on every request. Consequence, by
design: expiry is exact (checked on every request), but a revocation or a limit change made by another process
(`llmaas keys revoke`, another replica) takes effect within 1 s on every replica; changes made through this
process's admin API take effect at once (the cache is dropped). One primary-key lookup per key per second is cheaper
than any notification channel, and needs no Redis.

This module verifies nothing: turning an `Authorization` value into a `Principal` is `llmaas.tenancy.auth`, and
route protection is `llmaas/api/deps.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store, now
from llmaas.store.tenancy import ApiKey

SECRET_PREFIX = "sk-"
DISPLAY_PREFIX_LEN = 12
BOOTSTRAP_KEY_NAME = "bootstrap-admin"
KEY_CACHE_TTL_S = 1.0  # the documented bound on revocation lag across processes (docs/api.md)


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LEN]


def create_key(store: Store, *, project_id: str, name: str, **options: Any) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is never stored nor retrievable again.

    `options` are `tenancy_db.insert_key`'s: is_admin, models, expires_at, rpm, tpm, monthly_token_budget.
    """
    secret = generate_secret()
    with store.session() as s:
        row = tenancy_db.insert_key(
            s, project_id=project_id, name=name, prefix=display_prefix(secret), key_hash=hash_secret(secret), **options
        )
    return row, secret


def bootstrap(store: Store) -> str | None:
    """Create the first admin key (project `default`) when no usable admin key exists; returns its secret once.

    The caller prints it to stdout for the operator; it must never reach a log.
    """
    with store.session() as s:
        if tenancy_db.has_admin_key(s):
            return None
    _, secret = create_key(store, project_id="default", name=BOOTSTRAP_KEY_NAME, is_admin=True)
    return secret


# --- cached lookups ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitSet:
    """Limits that apply to one key: its own and its project's (None = none at that level)."""

    key_rpm: int | None = None
    key_tpm: int | None = None
    key_budget: int | None = None
    project_rpm: int | None = None
    project_tpm: int | None = None
    project_budget: int | None = None

    @staticmethod
    def _min(*values: int | None) -> int | None:
        present = [v for v in values if v is not None]
        return min(present) if present else None

    def effective(self) -> dict[str, int | None]:
        """The tightest limit of each kind (what `/v1/me` shows)."""
        return {
            "rpm": self._min(self.key_rpm, self.project_rpm),
            "tpm": self._min(self.key_tpm, self.project_tpm),
            "monthly_token_budget": self._min(self.key_budget, self.project_budget),
        }


NO_LIMITS = LimitSet()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    project_id: str
    name: str
    prefix: str
    key_hash: str
    is_admin: bool
    models: tuple[str, ...] | None
    expires_at: int | None
    revoked_at: int | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(
            id=row.id,
            project_id=row.project_id,
            name=row.name,
            prefix=row.prefix,
            key_hash=row.key_hash,
            is_admin=bool(row.is_admin),
            models=tuple(row.models) if row.models is not None else None,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    def expired(self, at: int | None = None) -> bool:
        return self.expires_at is not None and (at or now()) >= self.expires_at


class _TTLCache:
    """A small LRU whose entries expire after `ttl_s` (bounded: never grows past `max_entries`)."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            self._data.pop(key, None)
            return False, None
        self._data.move_to_end(key)
        return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = (time.monotonic() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def drop(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class KeyDirectory:
    """Keys by secret hash and limits by key/project, from the database through a TTL cache (see module doc)."""

    def __init__(self, store: Store, *, ttl_s: float = KEY_CACHE_TTL_S, max_entries: int = 10_000) -> None:
        self.store = store
        self._by_hash = _TTLCache(ttl_s, max_entries)  # hash -> KeyInfo | None (negative entries bound DB load)
        self._limits = _TTLCache(ttl_s, max_entries)  # (key_id, project_id) -> LimitSet

    def _load_key(self, key_hash: str) -> KeyInfo | None:
        with self.store.session() as s:
            row = tenancy_db.key_by_hash(s, key_hash)
            return KeyInfo.of(row) if row is not None else None

    async def by_secret(self, secret: str) -> KeyInfo | None:
        key_hash = hash_secret(secret)
        hit, info = self._by_hash.get(key_hash)
        if not hit:
            info = await asyncio.to_thread(self._load_key, key_hash)
            self._by_hash.put(key_hash, info)
        return info

    def _load_limits(self, key_id: str | None, project_id: str) -> LimitSet:
        with self.store.session() as s:
            p = tenancy_db.find_project(s, project_id)
            if p is None:
                return NO_LIMITS
            k = tenancy_db.find_key(s, key_id) if key_id else None
            return LimitSet(
                key_rpm=k.rpm if k else None,
                key_tpm=k.tpm if k else None,
                key_budget=k.monthly_token_budget if k else None,
                project_rpm=p.rpm,
                project_tpm=p.tpm,
                project_budget=p.monthly_token_budget,
            )

    async def limits(self, key_id: str | None, project_id: str) -> LimitSet:
        hit, value = self._limits.get((key_id, project_id))
        if not hit:
            value = await asyncio.to_thread(self._load_limits, key_id, project_id)
            self._limits.put((key_id, project_id), value)
        return value

    def invalidate(self) -> None:
        """Forget everything (called after admin changes made in this process)."""
        self._by_hash.clear()
        self._limits.clear()
