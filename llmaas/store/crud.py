"""Every query llmaas runs on tenancy's tables, plus tenant-scoped helpers for any table with `project_id`.

Functions take a `Session` first and everything else keyword-only; anything a tenant owns is read with
`project_id=` so a query can't forget the tenant. Another project's object and a missing one look the same
(`NotFound`, 404): existence never leaks across tenants. Ids that can't be ours (SQL or path characters) are
`NotFound` before any query. No HTTP, no hashing here (that is `llmaas.tenancy.keys`).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmaas.errors import Conflict, NotFound
from llmaas.ids import new_id
from llmaas.store.db import now
from llmaas.store.models import ApiKey, BudgetCounter, Project, UsageRecord

T = TypeVar("T")

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,255}$")
PROJECT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


def check_id(value: str, what: str = "object") -> str:
    """Ids are server-made: anything else (quotes, slashes, `..`, spaces) is simply not found."""
    if not isinstance(value, str) or not ID_RE.match(value) or ".." in value:
        raise NotFound(f"No {what} found with that id.")
    return value


# --- tenant-scoped helpers for any table with `id` and `project_id` (training's files, jobs, models) ----------


def get_owned(session: Session, model: type[T], obj_id: str, *, project_id: str, what: str | None = None) -> T:
    """The row `obj_id` of `model` if `project_id` owns it, else NotFound (the same for missing and foreign)."""
    label = what or getattr(model, "__tablename__", "object").rstrip("s")
    check_id(obj_id, label)
    row = session.scalars(
        select(model).where(model.id == obj_id, model.project_id == project_id)  # type: ignore[attr-defined]
    ).first()
    if row is None:
        raise NotFound(f"No {label} found with id '{obj_id}'.")
    return row


def list_owned(
    session: Session, model: type[T], *, project_id: str, limit: int = 100, order_by: Any = None, **equals: Any
) -> list[T]:
    """Rows of `model` owned by `project_id` (optionally filtered by column equality), newest first by default."""
    stmt = select(model).where(model.project_id == project_id)  # type: ignore[attr-defined]
    for column, value in equals.items():
        stmt = stmt.where(getattr(model, column) == value)
    if order_by is None and hasattr(model, "created_at"):
        order_by = model.created_at.desc()  # type: ignore[attr-defined]
    if order_by is not None:
        stmt = stmt.order_by(order_by)
    return list(session.scalars(stmt.limit(max(1, min(limit, 10_000)))))


def delete_owned(session: Session, model: type[T], obj_id: str, *, project_id: str) -> T:
    row = get_owned(session, model, obj_id, project_id=project_id)
    session.delete(row)
    return row


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
