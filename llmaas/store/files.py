"""`/v1/files`' table and every query on it: records in the database, bytes in the BlobStore under a server-made key.

Files are a general resource (fine-tuning reads them, batches read and write them), so they belong to no domain.
The client's filename is kept as display text only (reduced to a base name without control characters); the
blob key is `<file id>` and nothing the client sent. Every function takes `project_id` keyword-only and treats
another project's file as missing. Content validation is the readers' job (`training/files.py`, `batches/input.py`);
the wire shape is the API's (`api/protocol/files.py`).
"""

from __future__ import annotations

import re
from typing import IO

from sqlalchemy import BigInteger, Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from llmaas.errors import NotFound
from llmaas.ids import sortable_id
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Base, now

PURPOSES = ("fine-tune", "batch", "assistants", "vision", "user_data", "evals")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # controls, and lone surrogates (not text)


class FileRecord(Base):
    """An uploaded file (OpenAI's `file` object). The bytes live in the BlobStore under `blob_key`."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_project_created", "project_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(256))
    bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


def display_name(filename: str | None) -> str:
    """What we show for a client's filename: its last path component, printable, at most 256 chars."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = _CONTROL.sub("", name).strip()
    return name[:256] or "upload"


def create_file(
    session: Session,
    blobs: BlobStore,
    data: IO[bytes],
    *,
    project_id: str,
    purpose: str,
    filename: str | None,
    file_id: str | None = None,  # the server's own choice (a job's result file); never a client's
) -> FileRecord:
    file_id = file_id or sortable_id("file")
    size = blobs.put(file_id, data)
    record = FileRecord(
        id=file_id,
        project_id=project_id,
        purpose=purpose,
        filename=display_name(filename),
        bytes=size,
        blob_key=file_id,
        created_at=now(),
    )
    session.add(record)
    session.flush()
    return record


def get_file(session: Session, file_id: str, *, project_id: str, param: str = "file_id") -> FileRecord:
    record = session.get(FileRecord, file_id) if isinstance(file_id, str) else None
    if record is None or record.project_id != project_id:
        raise NotFound(f"No such File object: {str(file_id)[:80]}", param=param)
    return record


def list_files(
    session: Session,
    *,
    project_id: str,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10000,
    order: str = "desc",
) -> tuple[list[FileRecord], bool]:
    cond = [FileRecord.project_id == project_id]
    if purpose:
        cond.append(FileRecord.purpose == purpose)
    keys = (FileRecord.created_at, FileRecord.id)
    if after:
        ref = get_file(session, after, project_id=project_id, param="after")
        if order == "desc":
            cond.append(
                (FileRecord.created_at < ref.created_at)
                | ((FileRecord.created_at == ref.created_at) & (FileRecord.id < ref.id))
            )
        else:
            cond.append(
                (FileRecord.created_at > ref.created_at)
                | ((FileRecord.created_at == ref.created_at) & (FileRecord.id > ref.id))
            )
    ordering = [k.desc() for k in keys] if order == "desc" else list(keys)
    rows = list(session.scalars(select(FileRecord).where(*cond).order_by(*ordering).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, blobs: BlobStore, file_id: str, *, project_id: str) -> None:
    record = get_file(session, file_id, project_id=project_id)
    session.delete(record)
    session.flush()
    blobs.delete(record.blob_key)


def forget_file(session: Session, file_id: str) -> None:
    """Drop the record of a server-named file (a job's result file) so it can be created again under the same id;
    the new bytes then replace the blob under the same key."""
    old = session.get(FileRecord, file_id)
    if old is not None:
        session.delete(old)
        session.flush()
