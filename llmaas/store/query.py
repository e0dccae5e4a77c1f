"""What every domain's queries share: the id check, tenant-scoped get/list/delete, newest-first keyset pages, and the
conditional UPDATE that moves a leased row's status.

Anything a tenant owns is read with `project_id=` so a query can't forget the tenant; another project's object and a
missing one look the same (`NotFound`, 404), so existence never leaks across tenants. Ids that can't be ours (SQL or
path characters) are `NotFound` before any query. No table is declared here: each lives in its domain's module.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from llmaas.errors import NotFound

T = TypeVar("T")

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,255}$")


def check_id(value: str, what: str = "object") -> str:
    """Ids are server-made: anything else (quotes, slashes, `..`, spaces) is simply not found."""
    if not isinstance(value, str) or not ID_RE.match(value) or ".." in value:
        raise NotFound(f"No {what} found with that id.")
    return value


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


def move_status(
    session: Session,
    model: type[Any],
    row_id: str,
    *,
    sources: list[str],
    worker_id: str | None,
    values: dict[str, Any],
) -> bool:
    """One conditional UPDATE of a row with `status` and a lease (a fine-tuning job, a batch): `values` (the new status
    among them) only while its status is one of `sources` and, with `worker_id`, while that worker holds it. True if it
    moved; the domain's transition map chose `sources`, so concurrent movers cannot race it into a wrong state."""
    cond = [model.id == row_id, model.status.in_(sources)]
    if worker_id is not None:
        cond.append(model.worker_id == worker_id)
    return session.execute(update(model).where(*cond).values(**values)).rowcount == 1  # type: ignore[attr-defined]


def page_owned(
    session: Session, model: type[T], *, project_id: str, after: Any | None, limit: int
) -> tuple[list[T], bool]:
    """A page of `project_id`'s rows of `model`, newest first by (created_at, id), strictly older than the row
    `after` (the previous page's last, already checked by the caller's own getter and its error message)."""
    order = [model.created_at, model.id]  # type: ignore[attr-defined]
    cursor = None if after is None else [after.created_at, after.id]
    return page(session, model, order, [model.project_id == project_id], cursor, limit)  # type: ignore[attr-defined]


def page(
    session: Session, model: type[T], order: list[Any], cond: list[Any], cursor: list[Any] | None, limit: int
) -> tuple[list[T], bool]:
    """One page, newest first by the two `order` columns; `cursor` is the `after` object's values of them (rows
    strictly older come next). Returns (rows, has_more)."""
    if cursor is not None:
        (a, av), (b, bv) = zip(order, cursor)
        cond = cond + [or_(a < av, and_(a == av, b < bv))]
    rows = list(session.scalars(select(model).where(*cond).order_by(*(c.desc() for c in order)).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
