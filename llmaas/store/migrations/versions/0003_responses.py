"""Responses API state: responses, response_items.

Revision ID: 0003_responses
Revises: 0002_training
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_responses"
down_revision = "0002_training"
branch_labels = None
depends_on = None

_autoid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("instructions", sa.Text, nullable=True),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_responses_project_created", "responses", ["project_id", "created_at"])
    op.create_index("ix_responses_expires", "responses", ["expires_at"])
    op.create_table(
        "response_items",
        sa.Column("seq", _autoid, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("response_id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_response_items_response", "response_items", ["response_id", "kind", "position"])


def downgrade() -> None:
    op.drop_index("ix_response_items_response", table_name="response_items")
    op.drop_table("response_items")
    op.drop_index("ix_responses_expires", table_name="responses")
    op.drop_index("ix_responses_project_created", table_name="responses")
    op.drop_table("responses")
