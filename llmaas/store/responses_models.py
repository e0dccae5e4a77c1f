"""The Responses API's tables: stored responses and their input/output items, per project.

Declarative models only; queries live in `responses_crud.py`, the schema in migration 0003. A response's whole wire
object is kept as JSON (`body`) so GET returns exactly what POST returned; its items are rows of their own so
`previous_response_id` can rebuild a conversation and `input_items` can page, both with one indexed query. Every row
carries `project_id` and every query filters on it. `expires_at` (unix seconds, None = kept forever) comes from the
`responses_retention_days` setting: an expired response reads as not found and is purged later.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from llmaas.store.db import Base, now

AutoId = BigInteger().with_variant(Integer(), "sqlite")


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
