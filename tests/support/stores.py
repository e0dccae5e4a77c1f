"""Real databases and Redis for tests: a migrated SQLite file, a fresh PostgreSQL schema, a unique Redis prefix.

Nothing here is a mock: PostgreSQL (127.0.0.1:5432, role root or postgres, database `test`) and Redis (127.0.0.1:6379)
are the real servers; each test run gets its own schema / key prefix so parallel runs never collide, and it is
dropped afterwards. Override with LLMAAS_TEST_POSTGRES_URL / LLMAAS_TEST_REDIS_URL.

`store` is a pytest fixture run against both backends; a conftest.py that imports it offers it to its tests.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmaas.store.db import Store

PG_CANDIDATES = [
    os.environ.get("LLMAAS_TEST_POSTGRES_URL", ""),
    "postgresql+psycopg://root@127.0.0.1:5432/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
]
REDIS_URL = os.environ.get("LLMAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def postgres_url() -> str | None:
    """The first PostgreSQL URL whose role can connect, or None when no server answers."""
    import psycopg

    for url in filter(None, PG_CANDIDATES):
        try:
            with psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


@contextmanager
def sqlite_store(directory: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{directory / 'llmaas.db'}")
    store.upgrade()
    try:
        yield store
    finally:
        store.close()


@contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A fresh schema `t_<random>` in the database at `url` (its name), dropped with everything in it afterwards."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    raw = url.replace("+psycopg", "")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(raw, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def scratch_database(url: str, prefix: str) -> Iterator[str]:
    """A fresh database `<prefix>_<random>` on the server of `url` (its URL), dropped afterwards even while servers
    under test are still connected to it (several replicas share one, as in a deployment)."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_store(url: str) -> Iterator[Store]:
    """A migrated Store in a fresh schema (`scratch_schema`)."""
    with scratch_schema(url) as schema:
        store = Store(url, schema=schema)
        try:
            store.upgrade()
            yield store
        finally:
            store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated Store: a SQLite file, then a fresh PostgreSQL schema (skipped when no server answers)."""
    if request.param == "sqlite":
        with sqlite_store(tmp_path) as s:
            yield s
        return
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    with postgres_store(url) as s:
        yield s


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def unique_prefix() -> str:
    return f"llmaas-test:{secrets.token_hex(6)}:"
