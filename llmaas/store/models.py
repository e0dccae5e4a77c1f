"""Tenancy's tables: projects (tenants), API keys (hashed), usage records and monthly budget counters.

Declarative models only; queries live in `crud.py`, schema changes in `migrations/` (never `create_all`).
Times are unix seconds (BigInteger) everywhere, like OpenAI's `created`. Training's tables live in
`training_models.py` on the same `Base`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from llmaas.store.db import Base, now

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Project(Base):
    """A tenant: everything it owns (keys, files, jobs, models, usage) is invisible to other projects."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    # Project-wide limits (None = unlimited); they cap the sum over all of the project's keys.
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)

    def to_dict(self) -> dict[str, Any]:
        """The API's and CLI's shape of a project."""
        return {
            "object": "project",
            "id": self.id,
            "name": self.name,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "monthly_token_budget": self.monthly_token_budget,
            "created_at": self.created_at,
        }


class ApiKey(Base):
    """An API key. The secret is shown once at creation; only its sha256 and a display prefix are stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None = every model
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    # Per-key limits (None = no key-level limit; the project's limits still apply).
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    def to_dict(self) -> dict[str, Any]:
        """The listing shape: never the hash, never the secret."""
        return {
            "object": "api_key",
            "id": self.id,
            "project_id": self.project_id,
            "name": self.name,
            "prefix": self.prefix,
            "is_admin": self.is_admin,
            "models": self.models,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "created_at": self.created_at,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "monthly_token_budget": self.monthly_token_budget,
        }


class UsageRecord(Base):
    """One metered request. No foreign keys on purpose: a usage record is never refused."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_project_time", "project_id", "created_at"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(512))
    route: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class BudgetCounter(Base):
    """Tokens charged to a scope (`key:<id>` or `project:<id>`) in a calendar month (`YYYY-MM`, UTC).

    Charged with one conditional UPDATE (`used + n <= budget`), so concurrent requests cannot overspend.
    """

    __tablename__ = "budget_counters"

    scope: Mapped[str] = mapped_column(String(96), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
