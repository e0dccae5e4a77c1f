"""The Responses API's tables and every query on them: save, get, delete, page input items, rebuild a conversation,
purge.

A response's whole wire object is kept as JSON (`body`) so GET returns exactly what POST returned; its items are rows
of their own so `previous_response_id` can rebuild a conversation and `input_items` can page, both with one indexed
query (schema: migration 0003). Session first, everything else keyword-only, `project_id=` on every read
(`query.py`'s rules): another project's response, a missing one and an expired one are the same `NotFound`.
`expires_at` (unix seconds, None = kept forever) comes from the `responses_retention_days` setting: an expired
response reads as not found and is purged later. Rebuilding the conversation behind `previous_response_id` walks the
chain one indexed lookup per turn, then reads every turn's items in one query. No HTTP here; the item dicts are the
API's own wire shapes, stored and returned as they are.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, delete, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from llmaas.errors import InvalidRequest, NotFound
from llmaas.store.db import AutoId, Base, now
from llmaas.store.query import check_id

MAX_CHAIN = 1000  # turns one previous_response_id may reach back; beyond it the request is refused

# --- tables ----------------------------------------------------------------------------------------------------


class StoredResponse(Base):
    """One response (`resp_…`) as the API returned it, and the response it continued."""

    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_project_created", "project_id", "created_at"),
        Index("ix_responses_expires", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(32))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ResponseItem(Base):
    """One input or output item of a stored response, in order (`position` within its `kind`)."""

    __tablename__ = "response_items"
    __table_args__ = (Index("ix_response_items_response", "response_id", "kind", "position"),)

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    response_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # "input" | "output"
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- queries ---------------------------------------------------------------------------------------------------


def _alive(t: int) -> Any:
    return or_(StoredResponse.expires_at.is_(None), StoredResponse.expires_at > t)


def save_response(
    session: Session,
    *,
    project_id: str,
    body: dict[str, Any],
    input_items: list[dict[str, Any]],
    output_items: list[dict[str, Any]],
    expires_at: int | None,
) -> StoredResponse:
    """Store one finished response (its wire object) and its items; items carry their own `id`."""
    row = StoredResponse(
        id=body["id"],
        project_id=project_id,
        model=body["model"],
        status=body["status"],
        previous_response_id=body.get("previous_response_id"),
        instructions=body.get("instructions") if isinstance(body.get("instructions"), str) else None,
        body=body,
        created_at=int(body.get("created_at") or now()),
        expires_at=expires_at,
    )
    session.add(row)
    for kind, items in (("input", input_items), ("output", output_items)):
        for position, item in enumerate(items):
            session.add(
                ResponseItem(
                    id=item["id"], response_id=row.id, project_id=project_id, kind=kind, position=position, data=item
                )
            )
    session.flush()
    return row


def get_response(session: Session, response_id: str, *, project_id: str) -> StoredResponse:
    check_id(response_id, "response")
    row = session.scalars(
        select(StoredResponse).where(
            StoredResponse.id == response_id, StoredResponse.project_id == project_id, _alive(now())
        )
    ).first()
    if row is None:
        raise NotFound(f"Response with id '{response_id}' not found.")
    return row


def delete_response(session: Session, response_id: str, *, project_id: str) -> None:
    """Gone for good: the response and its items (a later turn that continued it no longer reaches it)."""
    row = get_response(session, response_id, project_id=project_id)
    session.execute(
        delete(ResponseItem).where(ResponseItem.response_id == row.id, ResponseItem.project_id == project_id)
    )
    session.delete(row)
    session.flush()


def list_input_items(
    session: Session, response_id: str, *, project_id: str, after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool]:
    """One page of a response's input items (`order` asc|desc by position, `after` an item id); (items, has_more)."""
    get_response(session, response_id, project_id=project_id)
    stmt = select(ResponseItem).where(
        ResponseItem.response_id == response_id, ResponseItem.project_id == project_id, ResponseItem.kind == "input"
    )
    desc = order == "desc"
    if after is not None:
        check_id(after, "item")
        anchor = session.scalars(stmt.where(ResponseItem.id == after)).first()
        if anchor is None:
            raise NotFound(f"Item with id '{after}' not found.")
        stmt = stmt.where(ResponseItem.position < anchor.position if desc else ResponseItem.position > anchor.position)
    stmt = stmt.order_by(ResponseItem.position.desc() if desc else ResponseItem.position).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return [r.data for r in rows[:limit]], len(rows) > limit


def conversation(session: Session, response_id: str, *, project_id: str) -> list[dict[str, Any]]:
    """The items of every turn up to and including `response_id`, oldest first: each turn's input, then its output.

    404 if `response_id` itself is not ours (or expired, or deleted); a deleted or expired earlier turn ends the
    chain there (its content is gone). Instructions are not items: as at OpenAI, they do not carry over.
    """
    missing = NotFound(f"Previous response with id '{response_id}' not found.", param="previous_response_id")
    try:
        check_id(response_id, "response")
    except NotFound:
        raise missing from None
    t = now()
    chain: list[str] = []
    current: str | None = response_id
    while current is not None:
        if len(chain) >= MAX_CHAIN:
            raise InvalidRequest(
                f"This conversation is longer than {MAX_CHAIN} responses; start a new one.",
                param="previous_response_id",
            )
        found = session.execute(
            select(StoredResponse.id, StoredResponse.previous_response_id).where(
                StoredResponse.id == current, StoredResponse.project_id == project_id, _alive(t)
            )
        ).first()
        if found is None:
            if not chain:
                raise missing
            break
        chain.append(found[0])
        current = found[1]
    turn = {rid: i for i, rid in enumerate(reversed(chain))}
    rows = session.scalars(
        select(ResponseItem).where(ResponseItem.response_id.in_(chain), ResponseItem.project_id == project_id)
    ).all()
    rows = sorted(rows, key=lambda r: (turn[r.response_id], r.kind != "input", r.position))
    return [r.data for r in rows]


def purge_expired(session: Session, *, before: int | None = None) -> int:
    """Delete responses (and their items) whose retention ended; returns how many responses went."""
    t = now() if before is None else before
    ids = list(session.scalars(select(StoredResponse.id).where(StoredResponse.expires_at <= t).limit(10_000)))
    if ids:
        session.execute(delete(ResponseItem).where(ResponseItem.response_id.in_(ids)))
        session.execute(delete(StoredResponse).where(StoredResponse.id.in_(ids)))
    return len(ids)
