"""The Batch API's tables and every query on them: batches (with the runner's lease) and their lines, one row each.

A line's request body is kept in its row, so a batch no longer depends on its input file once created, and its
finished output line (the exact JSON object written to the output or error file) is kept there too: the files are
assembled from the rows when the batch finalizes, so a line appears in them once whatever crashed in between (schema:
migration 0004_batches). Every row carries `project_id` and every query a client's request runs filters on it. What
the statuses mean and which moves are allowed is `llmaas.batches.jobs` (the one transition map, the lease rules),
which passes the statuses in: this module runs the queries and knows no rule.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, func, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from llmaas.errors import NotFound
from llmaas.ids import sortable_id
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Base, now
from llmaas.store.query import page_owned

# --- tables ----------------------------------------------------------------------------------------------------


class Batch(Base):
    """One batch (OpenAI's `batch` object), its request counts and the lease of the server that runs it."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_project_created", "project_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the key that created it (limits, budget)
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(512))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    errors: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The lease: whoever holds it runs the lines; an expired lease lets another server (or this one restarted) resume.
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every claim (optimistic concurrency)


class BatchLine(Base):
    """One line of a batch's input: its request, and once run, its output line (`result`)."""

    __tablename__ = "batch_lines"
    __table_args__ = (Index("ix_batch_lines_status", "batch_id", "status", "line"),)

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based position in the input file
    project_id: Mapped[str] = mapped_column(String(64))
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(12))  # pending | completed | failed
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


# --- batches ---------------------------------------------------------------------------------------------------


def insert_batch(
    session: Session,
    *,
    project_id: str,
    key_id: str | None,
    endpoint: str,
    model: str,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    created_at: int,
    expires_at: int,
    status: str,
    lines: list[tuple[str, dict[str, Any]]],
    **fields: Any,
) -> Batch:
    """A new batch (`fields`: more columns, such as a failed batch's `failed_at` and `errors`) and its pending lines
    (custom_id, body) in input order."""
    batch = Batch(
        id=sortable_id("batch", sep="_"),
        project_id=project_id,
        key_id=key_id,
        endpoint=endpoint,
        model=model,
        input_file_id=input_file_id,
        completion_window=completion_window,
        status=status,
        meta=metadata,
        total=len(lines),
        completed=0,
        failed=0,
        created_at=created_at,
        expires_at=expires_at,
        version=0,
        **fields,
    )
    session.add(batch)
    session.flush()
    for i, (custom_id, body) in enumerate(lines):
        session.add(
            BatchLine(
                batch_id=batch.id, line=i, project_id=project_id, custom_id=custom_id, body=body, status="pending"
            )
        )
    return batch


def by_id(session: Session, batch_id: str) -> Batch:
    """Any project's batch, which exists (the runner's read of a batch it claimed; a client's is `get_batch`)."""
    return session.get_one(Batch, batch_id)


def get_batch(session: Session, batch_id: str, *, project_id: str) -> Batch:
    batch = session.get(Batch, batch_id) if isinstance(batch_id, str) else None
    if batch is None or batch.project_id != project_id:
        raise NotFound(f"No batch found with id '{str(batch_id)[:80]}'.", param="batch_id")
    return batch


def list_batches(session: Session, *, project_id: str, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """Newest first; `after` is a batch id of the previous page."""
    ref = get_batch(session, after, project_id=project_id) if after else None
    return page_owned(session, Batch, project_id=project_id, after=ref, limit=limit)


def set_files(session: Session, batch_id: str, **file_ids: str) -> None:
    """Point the batch at its output and error files (`output_file_id=`, `error_file_id=`)."""
    if file_ids:
        session.execute(update(Batch).where(Batch.id == batch_id).values(**file_ids))


def queued_lines(session: Session, *, statuses: list[str]) -> int:
    """Pending lines of every batch in one of `statuses` (the runner's backlog, for /metrics)."""
    query = (
        select(func.count())
        .select_from(BatchLine)
        .join(Batch, Batch.id == BatchLine.batch_id)
        .where(BatchLine.status == "pending", Batch.status.in_(statuses))
    )
    return int(session.execute(query).scalar() or 0)


# --- the runner's lease ----------------------------------------------------------------------------------------


def next_claimable(session: Session, *, statuses: list[str], t: float) -> Batch | None:
    """The oldest batch in one of `statuses` whose lease is free or expired (row-locked on PostgreSQL, skipping rows
    another server holds)."""
    free = or_(Batch.lease_until.is_(None), Batch.lease_until < t)
    query = select(Batch).where(Batch.status.in_(statuses), free).order_by(Batch.created_at, Batch.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).first()


def take_lease(session: Session, batch: Batch, *, worker_id: str, until: float) -> bool:
    """Lease `batch` to `worker_id` if nobody claimed it since it was read (optimistic on `version`)."""
    taken = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.version == batch.version)
        .values(worker_id=worker_id, lease_until=until, version=batch.version + 1)
    )
    return taken.rowcount == 1  # type: ignore[attr-defined]


def extend_lease(session: Session, batch_id: str, *, worker_id: str, statuses: list[str], until: float) -> Batch | None:
    """Move the lease deadline; the batch as it is now, or None when it is no longer ours or not in `statuses`."""
    moved = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.worker_id == worker_id, Batch.status.in_(statuses))
        .values(lease_until=until)
    ).rowcount  # type: ignore[attr-defined]
    return session.get(Batch, batch_id, populate_existing=True) if moved == 1 else None


def release(session: Session, batch_id: str, *, worker_id: str) -> None:
    """Hand a batch back at once (graceful shutdown): the next claim resumes it."""
    session.execute(update(Batch).where(Batch.id == batch_id, Batch.worker_id == worker_id).values(lease_until=0.0))


# --- lines -----------------------------------------------------------------------------------------------------


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


def finished_lines(session: Session, batch_id: str) -> list[BatchLine]:
    """Every recorded (completed or failed) line, in input order."""
    return list(
        session.scalars(
            select(BatchLine)
            .where(BatchLine.batch_id == batch_id, BatchLine.status != "pending")
            .order_by(BatchLine.line)
        )
    )


def record_line(
    session: Session,
    batch_id: str,
    line: int,
    *,
    worker_id: str,
    statuses: list[str],
    result: dict[str, Any],
    failed: bool,
    usage: dict[str, Any] | None = None,
    budget: tuple[list[str], str, int] | None = None,
) -> bool:
    """Record one finished line, exactly once: its output, the counts, its usage row and budget settlement in one
    transaction, only while the line is pending and `worker_id` holds the lease of a batch in one of `statuses`.
    False (nothing changed, the session rolled back) otherwise."""
    done = session.execute(
        update(BatchLine)
        .where(BatchLine.batch_id == batch_id, BatchLine.line == line, BatchLine.status == "pending")
        .values(status="failed" if failed else "completed", result=result)
    ).rowcount  # type: ignore[attr-defined]
    owned = (
        done == 1
        and session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.worker_id == worker_id, Batch.status.in_(statuses))
            .values(completed=Batch.completed + (0 if failed else 1), failed=Batch.failed + (1 if failed else 0))
        ).rowcount  # type: ignore[attr-defined]
        == 1
    )
    if not owned:
        session.rollback()
        return False
    if usage is not None:
        tenancy_db.insert_usage(session, [usage])
    if budget is not None:
        tenancy_db.adjust_budget(session, scopes=budget[0], period=budget[1], delta=budget[2])
    return True
