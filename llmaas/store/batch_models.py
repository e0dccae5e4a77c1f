"""The Batch API's tables: batches (with the runner's lease) and their lines, one row per input line.

Declarative models only; state changes live in `llmaas.batches.jobs` (the one transition map, the lease, the
per-line progress), the schema in migration 0004_batches. A line's request body is kept in its row, so a batch no
longer depends on its input file once created, and its finished output line (the exact JSON object written to the
output or error file) is kept there too: the files are assembled from the rows when the batch finalizes, so a line
appears in them once whatever crashed in between. Every row carries `project_id` and every query filters on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from llmaas.store.db import Base, now


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
