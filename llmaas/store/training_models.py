"""Training's tables: uploaded files, fine-tuning jobs (with the worker lease), their events and checkpoints.

Declarative models only; state changes live in `llmaas.training.jobs` (the one transition map) and file records
in `llmaas.training.filestore`. Every row carries `project_id`, and every query filters on it. Blob keys point into
the BlobStore and are server-generated; a file's `filename` is display text only. Times are unix seconds, except the
lease deadline, which is a float so sub-second leases work in tests.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from llmaas.store.db import Base, now

AutoId = BigInteger().with_variant(Integer(), "sqlite")


class FileRecord(Base):
    """An uploaded file (OpenAI's `file` object). The bytes live in the BlobStore under `blob_key`."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(256))
    bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


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
