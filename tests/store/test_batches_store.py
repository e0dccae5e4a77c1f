"""The batch lifecycle in the database (SQLite and PostgreSQL): the lease, exactly-once line records, cancel, pages,
finalizing into files, and the migration matching the tables."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmaas.api.serving.batches import batch_object
from llmaas.batches import jobs as J
from llmaas.batches.input import InputLine, parse_input
from llmaas.batches.jobs import BatchStatus as S
from llmaas.errors import Conflict, NotFound
from llmaas.store import batches as batches_db
from llmaas.store.batches import Batch
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.store.tenancy import UsageRecord
from llmaas.training.files import FileValidationError


def make(store: Store, n: int = 3, project: str = "default") -> str:
    lines = [InputLine(f"c{i}", "/v1/embeddings", {"model": "m", "input": str(i)}) for i in range(n)]
    with store.session() as s:
        return J.create_batch(
            s,
            project_id=project,
            key_id=None,
            endpoint="/v1/embeddings",
            input_file_id="file-x",
            completion_window="24h",
            metadata=None,
            lines=lines,
            error=None,
        ).id


def usage(request_id: str) -> dict[str, object]:
    return {
        "project_id": "default",
        "key_id": None,
        "model": "m",
        "route": "batch:/v1/embeddings",
        "request_id": request_id,
        "prompt_tokens": 3,
        "completion_tokens": 0,
        "status": 200,
        "latency_ms": 1,
        "created_at": int(time.time()),
    }


def test_only_the_lease_holder_records_and_each_line_once(store: Store) -> None:
    batch_id = make(store)
    with store.session() as s:
        a = J.claim(s, worker_id="a", lease_s=0.2)
        assert a is not None and a.id == batch_id
        assert J.claim(s, worker_id="b", lease_s=5) is None  # held
        assert J.transition(s, batch_id, S.IN_PROGRESS, worker_id="a")
    with store.session() as s:
        assert J.record_line(s, batch_id, 0, worker_id="a", result={"n": 0}, failed=False, usage=usage("r0"))
    with store.session() as s:
        assert not J.record_line(s, batch_id, 0, worker_id="a", result={"n": 0}, failed=False, usage=usage("r0"))
    time.sleep(0.3)
    with store.session() as s:
        b = J.claim(s, worker_id="b", lease_s=5)  # a went silent: b resumes
        assert b is not None and b.worker_id == "b"
        assert batches_db.pending_lines(s, batch_id) == [1, 2]
    with store.session() as s:  # a zombie cannot record after losing the lease
        assert not J.record_line(s, batch_id, 1, worker_id="a", result={"n": 1}, failed=False, usage=usage("zombie"))
    with store.session() as s:
        assert J.heartbeat(s, batch_id, worker_id="a", lease_s=5) is None
        assert J.heartbeat(s, batch_id, worker_id="b", lease_s=5).status == "in_progress"  # type: ignore[union-attr]
        assert J.record_line(s, batch_id, 1, worker_id="b", result={"n": 1}, failed=True, usage=usage("r1"))
    with store.session() as s:
        batch = s.get(Batch, batch_id)
        assert (batch.completed, batch.failed, batches_db.pending_lines(s, batch_id)) == (1, 1, [2])
        rows = s.query(UsageRecord).filter(UsageRecord.route == "batch:/v1/embeddings").all()
        assert sorted(r.request_id for r in rows) == ["r0", "r1"]  # billed with the line, once each


def test_finalize_writes_files_in_input_order(store: Store, tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path / "files"))
    batch_id = make(store)
    with store.session() as s:
        J.claim(s, worker_id="a", lease_s=30)
        J.transition(s, batch_id, S.IN_PROGRESS, worker_id="a")
    for line in (2, 0):
        with store.session() as s:
            J.record_line(s, batch_id, line, worker_id="a", result={"custom_id": f"c{line}"}, failed=False)
    with store.session() as s:
        assert J.fail_pending(s, s.get(Batch, batch_id), worker_id="a", code="batch_expired", message="late") == 1
    with store.session() as s:
        assert J.transition(s, batch_id, S.FINALIZING, worker_id="a")
        assert J.finalize(s, blobs, s.get(Batch, batch_id), worker_id="a", to=S.EXPIRED)
    with store.session() as s:
        batch = batches_db.get_batch(s, batch_id, project_id="default")
        d = batch_object(batch).model_dump()
        assert (
            d["status"] == "expired"
            and d["expired_at"]
            and d["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        )
        with blobs.open(batch.output_file_id) as f:
            assert [json.loads(x)["custom_id"] for x in f.read().splitlines()] == ["c0", "c2"]
        with blobs.open(batch.error_file_id) as f:
            (err,) = [json.loads(x) for x in f.read().splitlines()]
        assert err["custom_id"] == "c1" and err["response"] is None and err["error"]["code"] == "batch_expired"


def test_cancel_pages_and_tenancy(store: Store) -> None:
    ids = [make(store) for _ in range(3)]
    with store.session() as s:
        page, more = batches_db.list_batches(s, project_id="default", after=None, limit=2)
        assert [b.id for b in page] == ids[::-1][:2] and more
        page, more = batches_db.list_batches(s, project_id="default", after=page[-1].id, limit=2)
        assert [b.id for b in page] == [ids[0]] and not more
        assert J.cancel_batch(s, ids[0], project_id="default").status == "cancelling"
        assert J.cancel_batch(s, ids[0], project_id="default").status == "cancelling"  # twice: no-op
        with pytest.raises(NotFound):
            batches_db.get_batch(s, ids[1], project_id="other")
        with pytest.raises(NotFound):
            batches_db.list_batches(s, project_id="other", after=ids[1], limit=2)
        assert batches_db.list_batches(s, project_id="other", after=None, limit=20) == ([], False)
        J.transition(s, ids[1], S.FAILED)
        with pytest.raises(Conflict):  # finished: 409, as cancelling a finished fine-tuning job
            J.cancel_batch(s, ids[1], project_id="default")


def test_input_validation_names_the_line() -> None:
    def check(text: str, endpoint: str | None = None) -> str:
        with pytest.raises(FileValidationError) as bad:
            list(parse_input([text.encode()], endpoint=endpoint, max_lines=2, max_line_bytes=200))
        return str(bad.value)

    ok = '{"custom_id": "%s", "method": "POST", "url": "%s", "body": {"model": "%s"}}\n'
    assert check(ok % ("a", "/v1/embeddings", "m") + ok % ("a", "/v1/embeddings", "m")).startswith("line 2: duplicate")
    assert "same model" in check(ok % ("a", "/v1/embeddings", "m") + ok % ("b", "/v1/embeddings", "n"))
    assert "one endpoint" in check(ok % ("a", "/v1/embeddings", "m") + ok % ("b", "/v1/completions", "m"))
    assert "'url'" in check(ok % ("a", "/v1/images", "m"))
    assert "more than 2" in check("".join(ok % (i, "/v1/embeddings", "m") for i in range(3)))
    assert "longer than" in check(ok % ("a" * 300, "/v1/embeddings", "m"))
    assert "no requests" in check("\n\n")
    assert check('{"custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {}}').startswith(
        "line 1: 'method'"
    )


def test_migration_matches_the_tables(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from llmaas.store.db import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "batch" in repr(d)] == []
