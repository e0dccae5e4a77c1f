"""The batch lifecycle: one ordered enum, one transition map, and every database change of a batch and its lines.

validating → in_progress → finalizing → completed | expired, with failed (validation, or the batch can no longer
run) and cancelling → cancelled from any unfinished status; anything after CANCELLING is finished. A status only
changes through `transition()`, a conditional UPDATE that checks the map.

Exactly once: a server runs a batch's lines only while it holds the batch's lease (`claim()` / `heartbeat()`,
optimistic on `version`, as fine-tuning jobs are claimed). A finished line is recorded by `record_line()` in one
transaction — its output line, the batch's counts, its usage row and its budget settlement — and only if the line is
still pending *and* the lease is still ours, so a line whose server died before that commit is simply run again by
the next holder, and a server that lost its lease cannot record anything. The output and error files are assembled
from the recorded rows when the batch finalizes (`finalize()`), in input order, each line once.
Functions take a SQLAlchemy session first and `project_id` keyword-only for what a client reads.
"""

from __future__ import annotations

import enum
import io
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from llmaas.batches.input import InputLine
from llmaas.errors import Conflict, NotFound
from llmaas.store import crud
from llmaas.store.batch_models import Batch, BatchLine
from llmaas.store.blobs import BlobStore
from llmaas.store.db import now
from llmaas.training import filestore

COMPLETION_WINDOWS = {"24h": 24 * 3600}
OUTPUT_PURPOSE = "batch_output"


class BatchStatus(enum.IntEnum):
    VALIDATING = 0
    IN_PROGRESS = 1
    FINALIZING = 2
    CANCELLING = 3
    COMPLETED = 4
    FAILED = 5
    EXPIRED = 6
    CANCELLED = 7

    @property
    def finished(self) -> bool:
        return self > BatchStatus.CANCELLING

    @property
    def api(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, value: str) -> BatchStatus:
        return cls[value.upper()]


S = BatchStatus
# The one transition map: status → the statuses it may move to.
TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    S.VALIDATING: frozenset({S.IN_PROGRESS, S.FAILED, S.CANCELLING}),
    S.IN_PROGRESS: frozenset({S.FINALIZING, S.FAILED, S.CANCELLING}),
    S.FINALIZING: frozenset({S.COMPLETED, S.EXPIRED, S.FAILED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}
ACTIVE = [s.api for s in BatchStatus if not s.finished]
RECORDING = [S.IN_PROGRESS.api, S.CANCELLING.api]  # a finished line may still be recorded in these
# The timestamp each status sets when entered.
STAMPS = {
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}


def new_batch_id() -> str:
    """`batch_…`: sorts by creation time, then 128 random bits."""
    return f"batch_{time.time_ns():016x}{secrets.token_hex(16)}"


def transition(
    session: Session, batch_id: str, to: BatchStatus, *, worker_id: str | None = None, **fields: Any
) -> bool:
    """Move a batch to `to` if the map allows it from its current status (and `worker_id` holds it). True if moved."""
    sources = [s.api for s, targets in TRANSITIONS.items() if to in targets]
    cond = [Batch.id == batch_id, Batch.status.in_(sources)]
    if worker_id is not None:
        cond.append(Batch.worker_id == worker_id)
    values: dict[str, Any] = {"status": to.api, **fields}
    if to in STAMPS:
        values.setdefault(STAMPS[to], now())
    if to.finished:
        values["lease_until"] = None
    return session.execute(update(Batch).where(*cond).values(**values)).rowcount == 1  # type: ignore[attr-defined]


# --- batches as clients see them -------------------------------------------------------------------------


def create_batch(
    session: Session,
    *,
    project_id: str,
    key_id: str | None,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    lines: list[InputLine] | None,
    error: dict[str, Any] | None,
) -> Batch:
    """A new batch with its lines (status validating), or — when the input file is invalid — failed with `error`."""
    t = now()
    batch = Batch(
        id=new_batch_id(),
        project_id=project_id,
        key_id=key_id,
        endpoint=endpoint,
        model=lines[0].body["model"][:512] if lines else "",
        input_file_id=input_file_id,
        completion_window=completion_window,
        status=S.VALIDATING.api,
        meta=metadata,
        total=len(lines or []),
        completed=0,
        failed=0,
        created_at=t,
        expires_at=t + COMPLETION_WINDOWS[completion_window],
        version=0,
    )
    if error is not None:
        batch.status, batch.failed_at, batch.errors = S.FAILED.api, t, {"object": "list", "data": [error]}
    session.add(batch)
    session.flush()
    for i, line in enumerate(lines or []):
        session.add(
            BatchLine(
                batch_id=batch.id,
                line=i,
                project_id=project_id,
                custom_id=line.custom_id,
                body=line.body,
                status="pending",
            )
        )
    return batch


def get_batch(session: Session, batch_id: str, *, project_id: str) -> Batch:
    batch = session.get(Batch, batch_id) if isinstance(batch_id, str) else None
    if batch is None or batch.project_id != project_id:
        raise NotFound(f"No batch found with id '{str(batch_id)[:80]}'.", param="batch_id")
    return batch


def list_batches(session: Session, *, project_id: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """Newest first; `after` is a batch id of the previous page."""
    cond = [Batch.project_id == project_id]
    if after:
        ref = get_batch(session, after, project_id=project_id)
        cond.append(or_(Batch.created_at < ref.created_at, and_(Batch.created_at == ref.created_at, Batch.id < ref.id)))
    rows = list(
        session.scalars(select(Batch).where(*cond).order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1))
    )
    return rows[:limit], len(rows) > limit


def cancel_batch(session: Session, batch_id: str, *, project_id: str) -> Batch:
    """Ask a batch to stop: cancelling now, cancelled once its runner has written the partial output."""
    batch = get_batch(session, batch_id, project_id=project_id)
    if not transition(session, batch.id, S.CANCELLING) and BatchStatus.of(batch.status) != S.CANCELLING:
        session.refresh(batch)
        if BatchStatus.of(batch.status) not in (S.CANCELLING, S.CANCELLED):
            raise Conflict(f"Cannot cancel a batch with status {batch.status}.", param="batch_id")
    session.refresh(batch)
    return batch


def batch_to_dict(b: Batch) -> dict[str, Any]:
    return {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": b.errors,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.meta,
    }


# --- the runner's lease ----------------------------------------------------------------------------------


def claim(session: Session, *, worker_id: str, lease_s: float) -> Batch | None:
    """Take the oldest unfinished batch whose lease is free or expired, or None (commits)."""
    for _ in range(8):
        t = time.time()
        free = or_(Batch.lease_until.is_(None), Batch.lease_until < t)
        query = select(Batch).where(Batch.status.in_(ACTIVE), free).order_by(Batch.created_at, Batch.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        batch = session.scalars(query).first()
        if batch is None:
            return None
        taken = session.execute(
            update(Batch)
            .where(Batch.id == batch.id, Batch.version == batch.version)
            .values(worker_id=worker_id, lease_until=t + lease_s, version=batch.version + 1)
        )
        session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(batch)
            return batch
    return None


def heartbeat(session: Session, batch_id: str, *, worker_id: str, lease_s: float) -> Batch | None:
    """Extend the lease; the batch as it is now (status, window), or None when it is no longer ours."""
    moved = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.worker_id == worker_id, Batch.status.in_(ACTIVE))
        .values(lease_until=time.time() + lease_s)
    ).rowcount  # type: ignore[attr-defined]
    return session.get(Batch, batch_id, populate_existing=True) if moved == 1 else None


def release(session: Session, batch_id: str, *, worker_id: str) -> None:
    """Hand a batch back at once (graceful shutdown): the next claim resumes it."""
    session.execute(update(Batch).where(Batch.id == batch_id, Batch.worker_id == worker_id).values(lease_until=0.0))


# --- lines -----------------------------------------------------------------------------------------------


def pending_lines(session: Session, batch_id: str) -> list[int]:
    return list(
        session.scalars(
            select(BatchLine.line)
            .where(BatchLine.batch_id == batch_id, BatchLine.status == "pending")
            .order_by(BatchLine.line)
        )
    )


def line_bodies(session: Session, batch_id: str, lines: list[int]) -> list[BatchLine]:
    return list(
        session.scalars(
            select(BatchLine).where(BatchLine.batch_id == batch_id, BatchLine.line.in_(lines)).order_by(BatchLine.line)
        )
    )


def record_line(
    session: Session,
    batch_id: str,
    line: int,
    *,
    worker_id: str,
    result: dict[str, Any],
    failed: bool,
    usage: dict[str, Any] | None = None,
    budget: tuple[list[str], str, int] | None = None,
) -> bool:
    """Record one finished line, exactly once: its output, the counts, its usage row and budget settlement in one
    transaction, only while the line is pending and `worker_id` holds the lease. False (nothing changed) otherwise."""
    done = session.execute(
        update(BatchLine)
        .where(BatchLine.batch_id == batch_id, BatchLine.line == line, BatchLine.status == "pending")
        .values(status="failed" if failed else "completed", result=result)
    ).rowcount  # type: ignore[attr-defined]
    owned = (
        done == 1
        and session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.worker_id == worker_id, Batch.status.in_(RECORDING))
            .values(completed=Batch.completed + (0 if failed else 1), failed=Batch.failed + (1 if failed else 0))
        ).rowcount  # type: ignore[attr-defined]
        == 1
    )
    if not owned:
        session.rollback()
        return False
    if usage is not None:
        crud.insert_usage(session, [usage])
    if budget is not None:
        crud.adjust_budget(session, scopes=budget[0], period=budget[1], delta=budget[2])
    return True


def fail_pending(session: Session, batch: Batch, *, worker_id: str, code: str, message: str) -> int:
    """Every line still pending becomes a failed line with `error` {code, message} (expiry); the number failed."""
    count = 0
    for row in line_bodies(session, batch.id, pending_lines(session, batch.id)):
        result = {
            "id": line_id(),
            "custom_id": row.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        count += record_line(session, batch.id, row.line, worker_id=worker_id, result=result, failed=True)
    return count


def line_id() -> str:
    return f"batch_req_{secrets.token_hex(16)}"


# --- finalizing ------------------------------------------------------------------------------------------


def _jsonl(rows: Iterator[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows))


def finalize(session: Session, blobs: BlobStore, batch: Batch, *, worker_id: str, to: BatchStatus) -> bool:
    """Move the batch to `to`, then write the output and error files from the recorded lines (input order).

    The status changes first, in the same transaction: from then on no `record_line` can commit a line for this
    batch (it requires a recording status), so the files hold exactly the lines the counts count (a line finishing
    while a cancelled batch finalizes is not recorded, and stays out of both). The file records and the status
    change commit together; a crash before that commit leaves at most an unreferenced blob, and the next holder
    finalizes again."""
    if not transition(session, batch.id, to, worker_id=worker_id):
        session.rollback()
        return False
    done = list(
        session.scalars(
            select(BatchLine)
            .where(BatchLine.batch_id == batch.id, BatchLine.status != "pending")
            .order_by(BatchLine.line)
        )
    )
    ids: dict[str, Any] = {}
    for column, status in (("output_file_id", "completed"), ("error_file_id", "failed")):
        rows = [r.result for r in done if r.status == status and r.result is not None]
        if rows:
            record = filestore.create_file(
                session,
                blobs,
                _jsonl(iter(rows)),
                project_id=batch.project_id,
                purpose=OUTPUT_PURPOSE,
                filename=f"{batch.id}_{column.split('_')[0]}.jsonl",
            )
            ids[column] = record.id
    if ids:
        session.execute(update(Batch).where(Batch.id == batch.id).values(**ids))
    return True
