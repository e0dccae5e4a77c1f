"""Store basics on SQLite and PostgreSQL: migrations, sessions, tenant-scoped crud, budgets, usage, blobs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from llmaas.errors import Conflict, NotFound
from llmaas.ids import new_id
from llmaas.store import query
from llmaas.store import tenancy as tenancy_db
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.store.tenancy import ApiKey


def test_upgrade_is_idempotent_and_seeds_default_project(store: Store) -> None:
    store.upgrade()
    assert store.current_revision() is not None
    with store.session() as s:
        assert tenancy_db.get_project(s, project_id="default").name


def test_session_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as s:
        tenancy_db.create_project(s, project_id="p1", name="one")
        raise RuntimeError("boom")
    with store.session() as s, pytest.raises(NotFound):
        tenancy_db.get_project(s, project_id="p1")


def test_projects_crud(store: Store) -> None:
    with store.session() as s:
        tenancy_db.create_project(s, project_id="acme", name="Acme", rpm=10)
    with store.session() as s, pytest.raises(Conflict):
        tenancy_db.create_project(s, project_id="acme", name="again")
    with store.session() as s:
        p = tenancy_db.update_project(s, project_id="acme", tpm=1000, rpm=None)
        assert (p.rpm, p.tpm) == (None, 1000)
        assert {p.id for p in tenancy_db.list_projects(s)} == {"default", "acme"}


@pytest.mark.parametrize(
    "bad", ["x' OR '1'='1", "../etc/passwd", "a/b", "", "a b", "..", "%00", "a;drop table projects"]
)
def test_bad_ids_are_not_found(store: Store, bad: str) -> None:
    with store.session() as s:
        with pytest.raises(NotFound):
            tenancy_db.get_project(s, project_id=bad)
        with pytest.raises(NotFound):
            tenancy_db.get_key(s, key_id=bad)
        with pytest.raises(NotFound):
            query.get_owned(s, ApiKey, bad, project_id="default")


def test_owned_rows_are_invisible_to_other_projects(store: Store) -> None:
    with store.session() as s:
        tenancy_db.create_project(s, project_id="a", name="A")
        tenancy_db.create_project(s, project_id="b", name="B")
        key = tenancy_db.insert_key(s, project_id="a", name="k", prefix="sk-x", key_hash="h" * 64)
    with store.session() as s:
        assert query.get_owned(s, ApiKey, key.id, project_id="a").id == key.id
        with pytest.raises(NotFound) as foreign:
            query.get_owned(s, ApiKey, key.id, project_id="b")
        with pytest.raises(NotFound) as missing:
            query.get_owned(s, ApiKey, new_id("key"), project_id="b")
        assert type(foreign.value) is type(missing.value)
        assert query.list_owned(s, ApiKey, project_id="b") == []
        assert [k.id for k in query.list_owned(s, ApiKey, project_id="a")] == [key.id]
        with pytest.raises(NotFound):
            tenancy_db.get_key(s, key_id=key.id, project_id="b")


def test_usage_summary_groups(store: Store) -> None:
    day = 86400 * 20000
    rows = [
        dict(
            project_id="default",
            key_id="k1",
            model="m1",
            route="chat",
            request_id="r1",
            prompt_tokens=3,
            completion_tokens=4,
            status=200,
            latency_ms=5,
            created_at=day + 10,
        ),
        dict(
            project_id="default",
            key_id="k2",
            model="m2",
            route="chat",
            request_id="r2",
            prompt_tokens=1,
            completion_tokens=1,
            status=200,
            latency_ms=5,
            created_at=day + 86400 + 10,
        ),
        dict(
            project_id="default",
            key_id="k2",
            model="m2",
            route="chat",
            request_id="r4",
            prompt_tokens=1,
            completion_tokens=1,
            status=429,
            latency_ms=5,
            created_at=day + 86400 + 5000,
        ),
        dict(
            project_id="other",
            key_id="k3",
            model="m1",
            route="chat",
            request_id="r3",
            prompt_tokens=100,
            completion_tokens=100,
            status=200,
            latency_ms=5,
            created_at=day + 10,
        ),
    ]
    with store.session() as s:
        tenancy_db.insert_usage(s, rows)
    with store.session() as s:
        by_model = tenancy_db.usage_summary(s, project_id="default", group_by="model")
        assert by_model == [
            {"group": "m1", "requests": 1, "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            {"group": "m2", "requests": 2, "prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        ]
        by_day = tenancy_db.usage_summary(s, project_id="default", group_by="day")
        assert [(g["group"], g["requests"]) for g in by_day] == [("2024-10-04", 1), ("2024-10-05", 2)]
        ranged = tenancy_db.usage_summary(s, project_id="default", group_by="key", start=day, end=day + 86400)
        assert [g["group"] for g in ranged] == ["k1"]
        assert tenancy_db.tokens_since(s, project_id="default", since=0) == 11


def test_budget_charges_are_atomic_under_threads(store: Store) -> None:
    """40 threads charge 10 tokens each against a budget of 200: exactly 20 succeed, never more."""
    results: list[bool] = []
    lock = threading.Lock()

    def charge() -> None:
        try:
            with store.session() as s:
                refused = tenancy_db.charge_budget(s, scopes=[("key:x", 200)], period="2026-11", tokens=10)
                if refused:
                    raise LookupError
            ok = True
        except LookupError:
            ok = False
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=charge) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 20
    with store.session() as s:
        assert tenancy_db.budget_used(s, scope="key:x", period="2026-11") == 200
        tenancy_db.adjust_budget(s, scopes=["key:x"], period="2026-11", delta=-50)
    with store.session() as s:
        assert tenancy_db.budget_used(s, scope="key:x", period="2026-11") == 150


def test_blob_store_uses_server_keys_only(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files")
    key = new_id("file")
    assert blobs.put(key, b"hello") == 5
    assert blobs.read(key) == b"hello"
    assert blobs.local_path(key).parent == (tmp_path / "files")
    blobs.delete(key)
    assert not blobs.exists(key)
    for bad in ["../x", "/etc/passwd", "a/../../b", ".hidden", "a b", "a\\b", ""]:
        with pytest.raises(ValueError):
            blobs.put(bad, b"x")
    assert list((tmp_path).iterdir()) == [tmp_path / "files"]


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    with store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.close()


def test_concurrent_upgrades_from_processes(tmp_path: Path) -> None:
    """Several processes starting at once (serve + worker, or replicas) all end at head, none fails."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = f"from llmaas.store.db import Store; Store({url!r}).upgrade()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    store = Store(url)
    assert store.current_revision() is not None
    store.close()
