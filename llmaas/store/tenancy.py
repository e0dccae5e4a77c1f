"""Tenancy's tables and every query on them: projects (tenants), API keys (hashed), usage records, monthly budgets.

Functions take a `Session` first and everything else keyword-only; anything a tenant owns is read with
`project_id=` (`query.py`'s rules: another project's object and a missing one are the same `NotFound`). Times are unix
seconds (BigInteger) everywhere, like OpenAI's `created`. No HTTP, no hashing here (that is `llmaas.tenancy.keys`).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from llmaas.errors import Conflict, NotFound
from llmaas.ids import new_id
from llmaas.store.db import AutoId, Base, now
from llmaas.store.query import check_id

PROJECT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")

# --- tables ----------------------------------------------------------------------------------------------------


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


# --- projects --------------------------------------------------------------------------------------------------

_LIMIT_FIELDS = ("rpm", "tpm", "monthly_token_budget")


def create_project(
    session: Session,
    *,
    name: str,
    project_id: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    monthly_token_budget: int | None = None,
) -> Project:
    pid = project_id or new_id("proj")
    if not PROJECT_ID_RE.match(pid):
        raise ValueError("project id: lowercase letters, digits, '-' and '_' (at most 64)")
    if session.get(Project, pid) is not None:
        raise Conflict(f"Project '{pid}' already exists.")
    row = Project(id=pid, name=name, rpm=rpm, tpm=tpm, monthly_token_budget=monthly_token_budget, created_at=now())
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # created concurrently
        raise Conflict(f"Project '{pid}' already exists.") from exc
    return row


def find_project(session: Session, project_id: str) -> Project | None:
    return session.get(Project, project_id)


def get_project(session: Session, *, project_id: str) -> Project:
    check_id(project_id, "project")
    row = session.get(Project, project_id)
    if row is None:
        raise NotFound(f"No project found with id '{project_id}'.")
    return row


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.created_at, Project.id)))


def update_project(session: Session, *, project_id: str, **fields: Any) -> Project:
    """Set `name` and/or limits; a limit set to None removes it."""
    row = get_project(session, project_id=project_id)
    for name, value in fields.items():
        if name not in ("name", *_LIMIT_FIELDS):
            raise ValueError(f"unknown project field {name}")
        setattr(row, name, value)
    session.flush()
    return row


# --- API keys --------------------------------------------------------------------------------------------------


def insert_key(
    session: Session,
    *,
    project_id: str,
    name: str,
    prefix: str,
    key_hash: str,
    is_admin: bool = False,
    models: list[str] | None = None,
    expires_at: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    monthly_token_budget: int | None = None,
) -> ApiKey:
    """Store a key by hash (`llmaas.tenancy.keys.create_key` makes the secret and calls this)."""
    get_project(session, project_id=project_id)
    row = ApiKey(
        id=new_id("key"),
        project_id=project_id,
        name=name,
        prefix=prefix,
        key_hash=key_hash,
        is_admin=is_admin,
        models=models,
        expires_at=expires_at,
        revoked_at=None,
        created_at=now(),
        rpm=rpm,
        tpm=tpm,
        monthly_token_budget=monthly_token_budget,
    )
    session.add(row)
    session.flush()
    return row


def find_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def get_key(session: Session, *, key_id: str, project_id: str | None = None) -> ApiKey:
    """A key by id; with `project_id`, only if that project owns it. `project_id=None` is for admins."""
    check_id(key_id, "key")
    stmt = select(ApiKey).where(ApiKey.id == key_id)
    if project_id is not None:
        stmt = stmt.where(ApiKey.project_id == project_id)
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"No API key found with id '{key_id}'.")
    return row


def list_keys(session: Session, *, project_id: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if project_id is not None:
        stmt = stmt.where(ApiKey.project_id == project_id)
    return list(session.scalars(stmt))


def update_key(session: Session, *, key_id: str, **fields: Any) -> ApiKey:
    """Set a key's name, limits, model scope or expiry; None removes a limit, the scope or the expiry."""
    row = get_key(session, key_id=key_id)
    for name, value in fields.items():
        if name not in ("name", "models", "expires_at", *_LIMIT_FIELDS):
            raise ValueError(f"unknown key field {name}")
        setattr(row, name, value)
    session.flush()
    return row


def revoke_key(session: Session, *, key_id: str, project_id: str | None = None) -> ApiKey:
    row = get_key(session, key_id=key_id, project_id=project_id)
    if row.revoked_at is None:
        row.revoked_at = now()
    session.flush()
    return row


def has_admin_key(session: Session) -> bool:
    """Whether any usable (not revoked, not expired) admin key exists."""
    t = now()
    stmt = select(ApiKey.id).where(
        ApiKey.is_admin.is_(True),
        ApiKey.revoked_at.is_(None),
        (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > t),
    )
    return session.scalars(stmt.limit(1)).first() is not None


# --- usage -----------------------------------------------------------------------------------------------------

GROUPS = ("model", "key", "day")


def insert_usage(session: Session, rows: list[dict[str, Any]]) -> None:
    """Bulk-insert usage records (one executemany)."""
    if rows:
        session.execute(insert(UsageRecord), rows)


def usage_summary(
    session: Session, *, project_id: str, start: int | None = None, end: int | None = None, group_by: str = "model"
) -> list[dict[str, Any]]:
    """Requests and tokens of one project in [start, end), grouped by model, key or UTC day."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")
    column: Any = {
        "model": UsageRecord.model,
        "key": UsageRecord.key_id,
        "day": UsageRecord.created_at // 86400,  # floor division (SQLAlchemy 2's `/` is true division)
    }[group_by].label("g")
    stmt = select(
        column,
        func.count().label("requests"),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
    ).where(UsageRecord.project_id == project_id)
    if start is not None:
        stmt = stmt.where(UsageRecord.created_at >= start)
    if end is not None:
        stmt = stmt.where(UsageRecord.created_at < end)
    stmt = stmt.group_by(column).order_by(column)
    out = []
    for g, requests, prompt, completion in session.execute(stmt):
        if group_by == "day":
            g = _dt.datetime.fromtimestamp(int(g) * 86400, _dt.UTC).strftime("%Y-%m-%d")
        out.append(
            {
                "group": g if g is not None else "none",
                "requests": int(requests),
                "prompt_tokens": int(prompt),
                "completion_tokens": int(completion),
                "total_tokens": int(prompt) + int(completion),
            }
        )
    return out


def tokens_since(session: Session, *, project_id: str, since: int) -> int:
    stmt = select(func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)).where(
        UsageRecord.project_id == project_id, UsageRecord.created_at >= since
    )
    return int(session.scalar(stmt) or 0)


# --- monthly budgets -------------------------------------------------------------------------------------------


def _ensure_counter(session: Session, scope: str, period: str) -> None:
    if session.get(BudgetCounter, (scope, period)) is not None:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(BudgetCounter).values(scope=scope, period=period, used=0).on_conflict_do_nothing()
    session.execute(stmt)


def charge_budget(session: Session, *, scopes: list[tuple[str, int]], period: str, tokens: int) -> str | None:
    """Charge `tokens` to every (scope, budget) or to none of them; returns the first scope that would overspend.

    Each charge is one conditional UPDATE (`used + n <= budget`): the database serialises concurrent charges, so
    no interleaving can pass a check and then overspend. The caller rolls back the session on refusal.
    """
    for scope, budget in scopes:
        _ensure_counter(session, scope, period)
        result = session.execute(
            update(BudgetCounter)
            .where(
                BudgetCounter.scope == scope,
                BudgetCounter.period == period,
                BudgetCounter.used + tokens <= budget,
            )
            .values(used=BudgetCounter.used + tokens)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return scope
    return None


def adjust_budget(session: Session, *, scopes: list[str], period: str, delta: int) -> None:
    """Settle a reservation: add `delta` (actual − reserved, usually negative) to each scope's counter."""
    if delta == 0 or not scopes:
        return
    session.execute(
        update(BudgetCounter)
        .where(BudgetCounter.scope.in_(scopes), BudgetCounter.period == period)
        .values(used=BudgetCounter.used + delta)
        .execution_options(synchronize_session=False)
    )


def budget_used(session: Session, *, scope: str, period: str) -> int:
    row = session.get(BudgetCounter, (scope, period))
    return int(row.used) if row else 0
