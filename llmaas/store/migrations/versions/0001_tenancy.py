"""Tenancy: projects, api_keys, usage_records, budget_counters, and the `default` project.

Revision ID: 0001_tenancy
Revises:
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0001_tenancy"
down_revision = None
branch_labels = None
depends_on = None

_autoid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
        sa.Column("monthly_token_budget", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("models", sa.JSON, nullable=True),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("tpm", sa.Integer, nullable=True),
        sa.Column("monthly_token_budget", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_api_keys_project_id", "api_keys", ["project_id"])
    op.create_table(
        "usage_records",
        sa.Column("id", _autoid, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("route", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_project_time", "usage_records", ["project_id", "created_at"])
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(96), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
    )
    # `--no-auth` requests and the bootstrap admin key belong to this project; it always exists.
    op.bulk_insert(projects, [{"id": "default", "name": "Default project", "created_at": int(time.time())}])


def downgrade() -> None:
    op.drop_table("budget_counters")
    op.drop_index("ix_usage_project_time", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index("ix_api_keys_project_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("projects")
