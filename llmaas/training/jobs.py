"""The fine-tuning job lifecycle: one ordered enum, one transition map, and every database change of a job.

validating_files → queued → running → succeeded | failed | cancelled (anything after RUNNING is finished).
A status only changes through `transition()`, a conditional UPDATE that checks the map (and, for a worker, that it
still holds the lease), so concurrent cancels, workers and lease expiry cannot race a job into a wrong state.
Workers `claim()` jobs atomically (FOR UPDATE SKIP LOCKED on PostgreSQL plus a version check that also works on
SQLite) and keep them with `heartbeat()`; a lease that expires lets the next worker resume from the last checkpoint.
Functions take a SQLAlchemy session and `project_id` keyword-only; HTTP shapes are OpenAI's (`*_to_dict`).
"""

from __future__ import annotations

import enum
import secrets
import time
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from llmaas.errors import InvalidRequest, NotFound
from llmaas.store.db import new_id, now
from llmaas.store.training_models import FineTuningCheckpoint, FineTuningEvent, FineTuningJob


class JobStatus(enum.IntEnum):
    VALIDATING_FILES = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self > JobStatus.RUNNING

    @property
    def api(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, value: str) -> JobStatus:
        return cls[value.upper()]


# The one transition map: status → the statuses it may move to.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
ACTIVE = [s.api for s in JobStatus if not s.finished]


def sortable_id(prefix: str) -> str:
    """A server-generated id that sorts by creation time (ties within a second stay ordered), then 128 random bits."""
    return f"{prefix}-{time.time_ns():016x}{secrets.token_hex(16)}"


def result_file_id(job_id: str) -> str:
    """The id of a job's step-metrics result file (`training/results.py`): derived, so the job needs no column for it."""
    return "file-" + job_id.removeprefix("ftjob-")


def sources(to: JobStatus) -> list[str]:
    return [s.api for s, targets in TRANSITIONS.items() if to in targets]


def transition(session: Session, job_id: str, to: JobStatus, *, worker_id: str | None = None, **fields: Any) -> bool:
    """Move a job to `to` if the map allows it from its current status (and `worker_id` holds it). True if moved."""
    cond = [FineTuningJob.id == job_id, FineTuningJob.status.in_(sources(to))]
    if worker_id is not None:
        cond.append(FineTuningJob.worker_id == worker_id)
    values: dict[str, Any] = {"status": to.api, **fields}
    if to.finished:
        values.update(finished_at=now(), lease_until=None)
    result = session.execute(update(FineTuningJob).where(*cond).values(**values))
    return result.rowcount == 1  # type: ignore[attr-defined]


# --- jobs ------------------------------------------------------------------------------------------------


def fine_tuned_name(base: str, project_id: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's shape: ft:<base>:<project>:<suffix>:<job id> (an empty suffix stays empty)."""
    return f"ft:{base}:{project_id}:{suffix or ''}:{job_id}"


def create_job(
    session: Session,
    *,
    project_id: str,
    model: str,
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
        status=JobStatus.VALIDATING_FILES.api,
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
    add_event(session, job, f"Created fine-tuning job: {job.id}")
    return job


def get_job(session: Session, job_id: str, *, project_id: str) -> FineTuningJob:
    job = session.get(FineTuningJob, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"No fine-tuning job found with id '{job_id[:80]}'", param="fine_tuning_job_id")
    return job


def _page(
    session: Session, model: Any, order: list[Any], cond: list[Any], cursor: list[Any] | None, limit: int
) -> tuple[list[Any], bool]:
    """Newest first; `cursor` is the ordering values of the `after` object (rows strictly older come next)."""
    if cursor is not None:
        (a, av), (b, bv) = zip(order, cursor)
        cond = cond + [or_(a < av, and_(a == av, b < bv))]
    rows = list(session.scalars(select(model).where(*cond).order_by(*(c.desc() for c in order)).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_jobs(session: Session, *, project_id: str, after: str | None, limit: int) -> tuple[list[FineTuningJob], bool]:
    cursor = None
    if after:
        ref = get_job(session, after, project_id=project_id)
        cursor = [ref.created_at, ref.id]
    order = [FineTuningJob.created_at, FineTuningJob.id]
    return _page(session, FineTuningJob, order, [FineTuningJob.project_id == project_id], cursor, limit)


def cancel_job(session: Session, job_id: str, *, project_id: str) -> FineTuningJob:
    """Cancel a job that has not finished (a worker notices within about a second); cancelling twice is a no-op."""
    job = get_job(session, job_id, project_id=project_id)
    if transition(session, job.id, JobStatus.CANCELLED):
        add_event(session, job, "Fine-tuning job cancelled")
    session.refresh(job)
    if job.status != JobStatus.CANCELLED.api:
        raise InvalidRequest(f"Job has already completed: status {job.status}", param="fine_tuning_job_id")
    return job


# --- the worker lease ------------------------------------------------------------------------------------


def claim(session: Session, *, worker_id: str, lease_s: float, max_attempts: int) -> FineTuningJob | None:
    """Take the oldest claimable job (new, or running with an expired lease) for `worker_id`, or None.

    Jobs whose workers died `max_attempts` times fail instead of being claimed again.
    """
    for _ in range(8):
        t = time.time()
        expired = or_(FineTuningJob.lease_until.is_(None), FineTuningJob.lease_until < t)
        claimable = or_(
            and_(FineTuningJob.status.in_([JobStatus.VALIDATING_FILES.api, JobStatus.QUEUED.api]), expired),
            and_(FineTuningJob.status == JobStatus.RUNNING.api, FineTuningJob.lease_until < t),
        )
        query = select(FineTuningJob).where(claimable).order_by(FineTuningJob.created_at, FineTuningJob.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job = session.scalars(query).first()
        if job is None:
            return None
        if job.attempts >= max_attempts:
            msg = f"The job's worker stopped {job.attempts} times without finishing; giving up."
            if transition(
                session, job.id, JobStatus.FAILED, error={"code": "worker_lost", "message": msg, "param": None}
            ):
                add_event(session, job, msg, level="error")
            session.commit()
            continue
        taken = session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job.id, FineTuningJob.version == job.version)
            .values(worker_id=worker_id, lease_until=t + lease_s, attempts=job.attempts + 1, version=job.version + 1)
        )
        session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(job)
            return job
    return None


def heartbeat(session: Session, job_id: str, *, worker_id: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer ours (cancelled, finished, or taken over)."""
    result = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.worker_id == worker_id, FineTuningJob.status.in_(ACTIVE))
        .values(lease_until=time.time() + lease_s)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


# --- events and checkpoints ------------------------------------------------------------------------------


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


def list_events(
    session: Session, job_id: str, *, project_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningEvent], bool]:
    get_job(session, job_id, project_id=project_id)
    cond = [FineTuningEvent.job_id == job_id, FineTuningEvent.project_id == project_id]
    cursor = None
    if after:
        ref = session.scalars(select(FineTuningEvent).where(*cond, FineTuningEvent.id == after)).first()
        if ref is None:
            raise NotFound(f"No event found with id '{after[:80]}'", param="after")
        cursor = [ref.seq, ref.seq]
    return _page(session, FineTuningEvent, [FineTuningEvent.seq, FineTuningEvent.seq], cond, cursor, limit)


def add_checkpoint(
    session: Session, job: FineTuningJob, *, epoch: int, step: int, metrics: dict[str, Any], blob_key: str
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
        fine_tuned_model_checkpoint=fine_tuned_name(job.model, job.project_id, job.suffix, job.id)
        + f":ckpt-step-{step}",
    )
    session.add(ckpt)
    return ckpt


def list_checkpoints(
    session: Session, job_id: str, *, project_id: str, after: str | None, limit: int
) -> tuple[list[FineTuningCheckpoint], bool]:
    get_job(session, job_id, project_id=project_id)
    cond = [FineTuningCheckpoint.job_id == job_id, FineTuningCheckpoint.project_id == project_id]
    cursor = None
    if after:
        ref = session.scalars(select(FineTuningCheckpoint).where(*cond, FineTuningCheckpoint.id == after)).first()
        if ref is None:
            raise NotFound(f"No checkpoint found with id '{after[:80]}'", param="after")
        cursor = [ref.step_number, ref.id]
    order = [FineTuningCheckpoint.step_number, FineTuningCheckpoint.id]
    return _page(session, FineTuningCheckpoint, order, cond, cursor, limit)


# --- OpenAI shapes ---------------------------------------------------------------------------------------


def job_to_dict(job: FineTuningJob) -> dict[str, Any]:
    hp = job.hyperparameters
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.project_id,
        # The step-metrics CSV (training/results.py), written just before a job succeeds; its id follows from the job's.
        "result_files": [result_file_id(job.id)] if job.status == JobStatus.SUCCEEDED.api else [],
        "status": job.status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "trained_tokens": job.trained_tokens,
        "error": job.error,
        "user_provided_suffix": job.suffix,
        "seed": job.seed,
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
        "method": job.method,
    }


def event_to_dict(event: FineTuningEvent) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "type": event.type,
    }


def checkpoint_to_dict(ckpt: FineTuningCheckpoint) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": ckpt.id,
        "created_at": ckpt.created_at,
        "fine_tuned_model_checkpoint": ckpt.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": ckpt.job_id,
        "step_number": ckpt.step_number,
        "metrics": ckpt.metrics,
    }
