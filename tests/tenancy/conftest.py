"""The `store` fixture, run against BOTH backends: a migrated SQLite file and a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmaas.store.db import Store
from llmaas.testing.stores import postgres_store, postgres_url, sqlite_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        with sqlite_store(tmp_path) as s:
            yield s
        return
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    with postgres_store(url) as s:
        yield s
