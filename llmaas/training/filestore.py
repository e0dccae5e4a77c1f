"""Uploaded files: records in the database, bytes in the BlobStore under a server-generated key.

The client's filename is kept as display text only (reduced to a base name without control characters); the
blob key is `<file id>` and nothing the client sent. Every function takes `project_id` keyword-only and treats
another project's file as missing. Content validation of fine-tuning files is `training/files.py`'s job.
"""

from __future__ import annotations

import re
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmaas.errors import NotFound
from llmaas.store.blobs import BlobStore
from llmaas.store.db import now
from llmaas.store.training_models import FileRecord
from llmaas.training.jobs import sortable_id

PURPOSES = ("fine-tune", "batch", "assistants", "vision", "user_data", "evals")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # controls, and lone surrogates (not text)


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


def file_to_dict(record: FileRecord) -> dict[str, Any]:
    return {
        "object": "file",
        "id": record.id,
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }
