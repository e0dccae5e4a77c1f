"""Fine-tuning's tables and every query on them: jobs (with the worker lease), their events and checkpoints.

Every row carries `project_id`, and every query a client's request runs filters on it (another project's job is
the same `NotFound` as a missing one). Blob keys point into the BlobStore and are server-generated. Times are unix
seconds, except the lease deadline, which is a float so sub-second leases work in tests. What the statuses mean and
which moves are allowed is `llmaas.training.jobs` (the one transition map), which passes the statuses in: this
module runs the queries and knows no rule. Uploaded files are `files.py`'s.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, and_, func, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from llmaas.errors import NotFound
from llmaas.ids import new_id, sortable_id
from llmaas.store.db import AutoId, Base, now
from llmaas.store.query import page, page_owned

T = TypeVar("T")

# --- tables ----------------------------------------------------------------------------------------------------


class FineTuningJob(Base):
    """A fine-tuning job (OpenAI's `fine_tuning.job`) plus the worker's lease and resume point."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index("ix_ftjobs_project_created", "project_id", "created_at"),
        Index("ix_ftjobs_status", "status"),
        Index("ix_ftjobs_model", "fine_tuned_model"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved: no "auto" left
    method: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"type": "supervised", "supervised": {...}, "lora": {...}}
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    adapter_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The worker lease: whoever holds it trains; an expired lease lets another worker resume.
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every claim (optimistic concurrency)
    # Resume point: the last finished epoch and its checkpoint's blob key.
    resume_epoch: Mapped[int] = mapped_column(Integer, default=0)
    resume_key: Mapped[str | None] = mapped_column(String(256), nullable=True)


class FineTuningEvent(Base):
    """One `fine_tuning.job.event` (messages and per-step metrics)."""

    __tablename__ = "fine_tuning_events"
    __table_args__ = (Index("ix_ftevents_job", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(1024))
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class FineTuningCheckpoint(Base):
    """One `fine_tuning.job.checkpoint`: the adapter after an epoch, stored in the BlobStore."""

    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (Index("ix_ftckpt_job", "job_id", "step_number"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))
    blob_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


# --- jobs ------------------------------------------------------------------------------------------------------


def insert_job(
    session: Session,
    *,
    project_id: str,
    model: str,
    status: str,
    training_file: str,
    validation_file: str | None,
    suffix: str | None,
    seed: int,
    hyperparameters: dict[str, Any],
    method: dict[str, Any],
) -> FineTuningJob:
    job = FineTuningJob(
        id=sortable_id("ftjob"),
        project_id=project_id,
        model=model,
        status=status,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        hyperparameters=hyperparameters,
        method=method,
        attempts=0,
        version=0,
        resume_epoch=0,
        created_at=now(),
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, *, project_id: str) -> FineTuningJob:
    job = session.get(FineTuningJob, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"No fine-tuning job found with id '{job_id[:80]}'", param="fine_tuning_job_id")
    return job


def list_jobs(session: Session, *, project_id: str, after: str | None, limit: int) -> tuple[list[FineTuningJob], bool]:
    """Newest first; `after` is a job id of the previous page."""
    ref = get_job(session, after, project_id=project_id) if after else None
    return page_owned(session, FineTuningJob, project_id=project_id, after=ref, limit=limit)


def update_owned(session: Session, job_id: str, *, worker_id: str, **values: Any) -> None:
    """Set columns of a job its worker holds (resume point, resolved hyperparameters); a no-op once it is not."""
    session.execute(
        update(FineTuningJob).where(FineTuningJob.id == job_id, FineTuningJob.worker_id == worker_id).values(**values)
    )


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(FineTuningJob.status, func.count()).group_by(FineTuningJob.status)).all()
    return {str(status): int(n) for status, n in rows}


def succeeded_jobs(session: Session, *, project_id: str, model: str | None) -> list[FineTuningJob]:
    """The project's jobs that published an adapter (all, or the one named `model`), oldest first."""
    cond = [
        FineTuningJob.project_id == project_id,
        FineTuningJob.status == "succeeded",
        FineTuningJob.adapter_key.is_not(None),
    ]
    if model is not None:
        cond.append(FineTuningJob.fine_tuned_model == model)
    return list(session.scalars(select(FineTuningJob).where(*cond).order_by(FineTuningJob.created_at)))


# --- the worker lease ------------------------------------------------------------------------------------------


def next_claimable(session: Session, *, waiting: list[str], running: str, t: float) -> FineTuningJob | None:
    """The oldest job in a `waiting` status with no live lease, or `running` with an expired one (row-locked on
    PostgreSQL, skipping rows another worker holds)."""
    expired = or_(FineTuningJob.lease_until.is_(None), FineTuningJob.lease_until < t)
    claimable = or_(
        and_(FineTuningJob.status.in_(waiting), expired),
        and_(FineTuningJob.status == running, FineTuningJob.lease_until < t),
    )
    query = select(FineTuningJob).where(claimable).order_by(FineTuningJob.created_at, FineTuningJob.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return session.scalars(query).first()


def take_lease(session: Session, job: FineTuningJob, *, worker_id: str, until: float) -> bool:
    """Lease `job` to `worker_id` if nobody claimed it since it was read (optimistic on `version`)."""
    taken = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job.id, FineTuningJob.version == job.version)
        .values(worker_id=worker_id, lease_until=until, attempts=job.attempts + 1, version=job.version + 1)
    )
    return taken.rowcount == 1  # type: ignore[attr-defined]


def extend_lease(session: Session, job_id: str, *, worker_id: str, statuses: list[str], until: float) -> bool:
    """Move the lease deadline; False when the job is no longer `worker_id`'s or no longer in `statuses`."""
    result = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.worker_id == worker_id, FineTuningJob.status.in_(statuses))
        .values(lease_until=until)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def hand_back(session: Session, job_id: str, *, worker_id: str) -> None:
    """Free the lease at once and give back the attempt (a graceful shutdown is not a lost worker)."""
    update_owned(session, job_id, worker_id=worker_id, lease_until=0.0, attempts=FineTuningJob.attempts - 1)


# --- events and checkpoints ------------------------------------------------------------------------------------


def add_event(
    session: Session,
    job: FineTuningJob,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        FineTuningEvent(
            id=new_id("ftevent"),
            job_id=job.id,
            project_id=job.project_id,
            level=level,
            message=message[:1024],
            type=type,
            data=data,
            created_at=now(),
        )
    )


def _job_page(
    session: Session,
    model: type[T],
    job_id: str,
    *,
    project_id: str,
    order: list[Any],
    after: str | None,
    limit: int,
    what: str,
) -> tuple[list[T], bool]:
    """One page of a job's events or checkpoints, newest first by `order`; `after` is a row id of the previous page."""
    get_job(session, job_id, project_id=project_id)
    cond = [model.job_id == job_id, model.project_id == project_id]  # type: ignore[attr-defined]
    cursor = None
    if after:
        ref = session.scalars(select(model).where(*cond, model.id == after)).first()  # type: ignore[attr-defined]
        if ref is None:
            raise NotFound(f"No {what} found with id '{after[:80]}'", param="after")
        cursor = [getattr(ref, column.key) for column in order]
    return page(session, model, order, cond, cursor, limit)


def list_events(
    session: Session, job_id: str, *, project_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningEvent], bool]:
    order = [FineTuningEvent.seq, FineTuningEvent.seq]  # seq is unique: it is its own tie-break
    return _job_page(
        session, FineTuningEvent, job_id, project_id=project_id, order=order, after=after, limit=limit, what="event"
    )


def metrics_data(session: Session, job: FineTuningJob) -> list[dict[str, Any]]:
    """The data of the job's `metrics` events, oldest first (the result file's rows)."""
    query = (
        select(FineTuningEvent.data)
        .where(
            FineTuningEvent.job_id == job.id,
            FineTuningEvent.project_id == job.project_id,
            FineTuningEvent.type == "metrics",
        )
        .order_by(FineTuningEvent.seq)
    )
    return [d for d in session.scalars(query) if d]


def add_checkpoint(
    session: Session, job: FineTuningJob, *, epoch: int, step: int, metrics: dict[str, Any], blob_key: str, name: str
) -> FineTuningCheckpoint:
    ckpt = FineTuningCheckpoint(
        id=new_id("ftckpt"),
        job_id=job.id,
        project_id=job.project_id,
        epoch=epoch,
        step_number=step,
        metrics=metrics,
        blob_key=blob_key,
        created_at=now(),
        fine_tuned_model_checkpoint=name,
    )
    session.add(ckpt)
    return ckpt


def list_checkpoints(
    session: Session, job_id: str, *, project_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningCheckpoint], bool]:
    order = [FineTuningCheckpoint.step_number, FineTuningCheckpoint.id]
    return _job_page(
        session,
        FineTuningCheckpoint,
        job_id,
        project_id=project_id,
        order=order,
        after=after,
        limit=limit,
        what="checkpoint",
    )


def find_checkpoint(
    session: Session, *, project_id: str, job_id: str, name: str
) -> tuple[FineTuningCheckpoint, FineTuningJob] | None:
    """The project's checkpoint published as model `name` (of job `job_id`), with its job; None if there is none."""
    row = session.execute(
        select(FineTuningCheckpoint, FineTuningJob)
        .join(FineTuningJob, FineTuningJob.id == FineTuningCheckpoint.job_id)
        .where(
            FineTuningCheckpoint.job_id == job_id,
            FineTuningCheckpoint.project_id == project_id,
            FineTuningJob.project_id == project_id,
            FineTuningCheckpoint.fine_tuned_model_checkpoint == name,
        )
    ).first()
    return None if row is None else (row[0], row[1])
