"""The job lifecycle: the transition map, cancel, pagination, atomic claims (SQLite and PostgreSQL), lease expiry."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from llmaas.errors import InvalidRequest, NotFound
from llmaas.store import training as training_db
from llmaas.store.db import Store
from llmaas.training import jobs as J
from llmaas.training.jobs import TRANSITIONS, JobStatus


def make_job(store: Store, project: str = "p1", **kw) -> str:
    with store.session() as s:
        job = J.create_job(
            s,
            project_id=project,
            model="tiny",
            training_file="file-x",
            validation_file=None,
            suffix=kw.get("suffix"),
            seed=1,
            hyperparameters={"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 1.0, "learning_rate": 1e-3},
            method={"type": "supervised"},
        )
        return job.id


def test_map_is_ordered_and_finished_states_are_final() -> None:
    for status, targets in TRANSITIONS.items():
        assert all(t > status for t in targets), "the lifecycle only moves forward"
        assert status.finished == (not targets)
    assert [s.api for s in JobStatus] == ["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


def test_transitions_follow_the_map(sqlite_db: Store) -> None:
    job_id = make_job(sqlite_db)
    with sqlite_db.session() as s:
        assert not J.transition(s, job_id, JobStatus.SUCCEEDED)  # not from validating_files
        assert J.transition(s, job_id, JobStatus.QUEUED)
        assert J.transition(s, job_id, JobStatus.RUNNING)
        assert J.transition(s, job_id, JobStatus.SUCCEEDED, fine_tuned_model="ft:x")
        assert not J.transition(s, job_id, JobStatus.CANCELLED)
        job = training_db.get_job(s, job_id, project_id="p1")
        assert job.status == "succeeded" and job.finished_at is not None
    with sqlite_db.session() as s, pytest.raises(InvalidRequest, match="already completed"):
        J.cancel_job(s, job_id, project_id="p1")


def test_cancel_pagination_and_isolation(sqlite_db: Store) -> None:
    ids = [make_job(sqlite_db) for _ in range(5)]
    with sqlite_db.session() as s:
        page, more = training_db.list_jobs(s, project_id="p1", after=None, limit=2)
        assert [j.id for j in page] == ids[::-1][:2] and more
        page2, _ = training_db.list_jobs(s, project_id="p1", after=page[-1].id, limit=10)
        assert [j.id for j in page2] == ids[::-1][2:]
        assert J.cancel_job(s, ids[0], project_id="p1").status == "cancelled"
        assert J.cancel_job(s, ids[0], project_id="p1").status == "cancelled"  # idempotent
        with pytest.raises(NotFound):
            training_db.get_job(s, ids[1], project_id="p2")
        with pytest.raises(NotFound):
            J.cancel_job(s, ids[1], project_id="p2")
        events, _ = training_db.list_events(s, ids[0], project_id="p1", after=None, limit=10)
        assert events[0].message == "Fine-tuning job cancelled"  # newest first
        assert training_db.list_jobs(s, project_id="p2", after=None, limit=10) == ([], False)


def test_expired_lease_is_reclaimed_then_fails_after_max_attempts(sqlite_db: Store) -> None:
    job_id = make_job(sqlite_db)
    with sqlite_db.session() as s:
        job = J.claim(s, worker_id="w1", lease_s=0.2, max_attempts=2)
        assert job is not None and job.id == job_id and job.attempts == 1
        assert J.transition(s, job_id, JobStatus.QUEUED, worker_id="w1")
        assert not J.transition(s, job_id, JobStatus.RUNNING, worker_id="w2")  # not w2's job
        assert J.transition(s, job_id, JobStatus.RUNNING, worker_id="w1")
        assert J.claim(s, worker_id="w2", lease_s=0.2, max_attempts=2) is None  # lease still held
    time.sleep(0.3)
    with sqlite_db.session() as s:
        job = J.claim(s, worker_id="w2", lease_s=0.2, max_attempts=2)
        assert job is not None and job.worker_id == "w2" and job.attempts == 2 and job.status == "running"
        assert not J.heartbeat(s, job_id, worker_id="w1", lease_s=1)  # w1 lost it
    time.sleep(0.3)
    with sqlite_db.session() as s:
        assert J.claim(s, worker_id="w3", lease_s=0.2, max_attempts=2) is None
        job = training_db.get_job(s, job_id, project_id="p1")
        assert job.status == "failed" and job.error["code"] == "worker_lost"


def concurrent_claims(store: Store, jobs: int, claimers: int) -> Counter:
    ids = [make_job(store) for _ in range(jobs)]
    taken: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(claimers)

    def claimer(n: int) -> None:
        start.wait()
        while True:
            with store.session() as s:
                job = J.claim(s, worker_id=f"w{n}", lease_s=60, max_attempts=3)
            if job is None:
                return
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(taken)
    assert set(counts) == set(ids)
    return counts


def test_concurrent_claimers_sqlite(sqlite_db: Store) -> None:
    assert max(concurrent_claims(sqlite_db, 12, 4).values()) == 1


@pytest.mark.postgres
def test_concurrent_claimers_postgres(pg_db: Store) -> None:
    assert max(concurrent_claims(pg_db, 30, 8).values()) == 1


@pytest.mark.parametrize("db", ["sqlite_db", pytest.param("pg_db", marks=pytest.mark.postgres)])
def test_migration_0002_matches_the_models(db: str, request: pytest.FixtureRequest) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import llmaas.store.tenancy  # noqa: F401  (all tables on Base.metadata)
    from llmaas.store.db import Base

    store: Store = request.getfixturevalue(db)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    ours = ("files", "fine_tuning_jobs", "fine_tuning_events", "fine_tuning_checkpoints")
    assert [d for d in diff if any(t in str(d) for t in ours)] == []
