"""The fine-tuning job lifecycle: one ordered enum, one transition map, the lease rules and the model names.

validating_files → queued → running → succeeded | failed | cancelled (anything after RUNNING is finished).
A status only changes through `transition()`, a conditional UPDATE that checks the map (and, for a worker, that it
still holds the lease), so concurrent cancels, workers and lease expiry cannot race a job into a wrong state.
Workers `claim()` jobs atomically (FOR UPDATE SKIP LOCKED on PostgreSQL plus a version check that also works on
SQLite) and keep them with `heartbeat()`; a lease that expires lets the next worker resume from the last checkpoint.
The queries themselves are `llmaas.store.training`'s (reads such as `get_job` and `list_events` are called there
directly); this module decides which statuses they run with. The HTTP shapes are `api/protocol/fine_tuning.py`'s.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from sqlalchemy.orm import Session

from llmaas.errors import InvalidRequest
from llmaas.store import training as training_db
from llmaas.store.db import now
from llmaas.store.query import move_status
from llmaas.store.training import FineTuningCheckpoint, FineTuningJob


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


def result_file_id(job_id: str) -> str:
    """The id of a job's step-metrics result file (`training/results.py`): derived, so the job needs no column for it."""
    return "file-" + job_id.removeprefix("ftjob-")


def sources(to: JobStatus) -> list[str]:
    return [s.api for s, targets in TRANSITIONS.items() if to in targets]


def transition(session: Session, job_id: str, to: JobStatus, *, worker_id: str | None = None, **fields: Any) -> bool:
    """Move a job to `to` if the map allows it from its current status (and `worker_id` holds it). True if moved."""
    values: dict[str, Any] = {"status": to.api, **fields}
    if to.finished:
        values.update(finished_at=now(), lease_until=None)
    return move_status(session, FineTuningJob, job_id, sources=sources(to), worker_id=worker_id, values=values)


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
    job = training_db.insert_job(
        session,
        project_id=project_id,
        model=model,
        status=JobStatus.VALIDATING_FILES.api,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        hyperparameters=hyperparameters,
        method=method,
    )
    training_db.add_event(session, job, f"Created fine-tuning job: {job.id}")
    return job


def cancel_job(session: Session, job_id: str, *, project_id: str) -> FineTuningJob:
    """Cancel a job that has not finished (a worker notices within about a second); cancelling twice is a no-op."""
    job = training_db.get_job(session, job_id, project_id=project_id)
    if transition(session, job.id, JobStatus.CANCELLED):
        training_db.add_event(session, job, "Fine-tuning job cancelled")
    session.refresh(job)
    if job.status != JobStatus.CANCELLED.api:
        raise InvalidRequest(f"Job has already completed: status {job.status}", param="fine_tuning_job_id")
    return job


# --- the worker lease ------------------------------------------------------------------------------------


def claim(session: Session, *, worker_id: str, lease_s: float, max_attempts: int) -> FineTuningJob | None:
    """Take the oldest claimable job (new, or running with an expired lease) for `worker_id`, or None.

    Jobs whose workers died `max_attempts` times fail instead of being claimed again.
    """
    waiting = [JobStatus.VALIDATING_FILES.api, JobStatus.QUEUED.api]
    for _ in range(8):
        t = time.time()
        job = training_db.next_claimable(session, waiting=waiting, running=JobStatus.RUNNING.api, t=t)
        if job is None:
            return None
        if job.attempts >= max_attempts:
            msg = f"The job's worker stopped {job.attempts} times without finishing; giving up."
            if transition(
                session, job.id, JobStatus.FAILED, error={"code": "worker_lost", "message": msg, "param": None}
            ):
                training_db.add_event(session, job, msg, level="error")
            session.commit()
            continue
        taken = training_db.take_lease(session, job, worker_id=worker_id, until=t + lease_s)
        session.commit()
        if taken:
            session.refresh(job)
            return job
    return None


def heartbeat(session: Session, job_id: str, *, worker_id: str, lease_s: float) -> bool:
    """Extend the lease; False when the job is no longer ours (cancelled, finished, or taken over)."""
    return training_db.extend_lease(session, job_id, worker_id=worker_id, statuses=ACTIVE, until=time.time() + lease_s)


def add_checkpoint(
    session: Session, job: FineTuningJob, *, epoch: int, step: int, metrics: dict[str, Any], blob_key: str
) -> FineTuningCheckpoint:
    """Record the adapter after an epoch, published as `<the job's model name>:ckpt-step-<step>`."""
    name = fine_tuned_name(job.model, job.project_id, job.suffix, job.id) + f":ckpt-step-{step}"
    return training_db.add_checkpoint(
        session, job, epoch=epoch, step=step, metrics=metrics, blob_key=blob_key, name=name
    )
