"""Training: files, fine_tuning_jobs, fine_tuning_events, fine_tuning_checkpoints.

Revision ID: 0002_training
Revises: 0001_tenancy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_training"
down_revision = "0001_tenancy"
branch_labels = None
depends_on = None

_autoid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("blob_key", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_files_project_created", "files", ["project_id", "created_at"])
    op.create_table(
        "fine_tuning_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("method", sa.JSON, nullable=False),
        sa.Column("fine_tuned_model", sa.String(512), nullable=True),
        sa.Column("trained_tokens", sa.BigInteger, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("adapter_key", sa.String(256), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("resume_epoch", sa.Integer, nullable=False),
        sa.Column("resume_key", sa.String(256), nullable=True),
    )
    op.create_index("ix_ftjobs_project_created", "fine_tuning_jobs", ["project_id", "created_at"])
    op.create_index("ix_ftjobs_status", "fine_tuning_jobs", ["status"])
    op.create_index("ix_ftjobs_model", "fine_tuning_jobs", ["fine_tuned_model"])
    op.create_table(
        "fine_tuning_events",
        sa.Column("seq", _autoid, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.String(1024), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ftevents_job", "fine_tuning_events", ["job_id", "seq"])
    op.create_table(
        "fine_tuning_checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(512), nullable=False),
        sa.Column("blob_key", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ftckpt_job", "fine_tuning_checkpoints", ["job_id", "step_number"])


def downgrade() -> None:
    op.drop_index("ix_ftckpt_job", table_name="fine_tuning_checkpoints")
    op.drop_table("fine_tuning_checkpoints")
    op.drop_index("ix_ftevents_job", table_name="fine_tuning_events")
    op.drop_table("fine_tuning_events")
    op.drop_index("ix_ftjobs_model", table_name="fine_tuning_jobs")
    op.drop_index("ix_ftjobs_status", table_name="fine_tuning_jobs")
    op.drop_index("ix_ftjobs_project_created", table_name="fine_tuning_jobs")
    op.drop_table("fine_tuning_jobs")
    op.drop_index("ix_files_project_created", table_name="files")
    op.drop_table("files")
