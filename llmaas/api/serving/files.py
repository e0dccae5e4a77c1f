"""`/v1/files` handlers, framework-free: the caller's project in, OpenAI file objects (api/protocol/files.py) out.

Bytes go to the BlobStore under the new file's id (the client's filename is display text only); database and
blob work runs on worker threads so the event loop never waits on disk. Another project's file is a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import IO, Any

from llmaas.api.protocol.files import FileDeleted, FileList, FileObject
from llmaas.batches.input import check_batch_file
from llmaas.errors import InvalidRequest, Unavailable
from llmaas.store import files as files_db
from llmaas.store.blobs import BlobStore
from llmaas.tenancy.types import Principal
from llmaas.training.files import FileValidationError

CHUNK = 1 << 20


async def read_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """An open file's bytes, CHUNK at a time, each read on a worker thread; closes it at the end (or on disconnect)."""
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


class FileService:
    def __init__(self, store: Any, blobs: BlobStore, settings: Any = None) -> None:
        if store is None:
            raise Unavailable("Files need the database; this server runs without one.")
        self.store, self.blobs, self.settings = store, blobs, settings

    async def upload(self, principal: Principal, *, purpose: str, filename: str | None, data: IO[bytes]) -> FileObject:
        if purpose not in files_db.PURPOSES:
            raise InvalidRequest(
                f"'{purpose[:40]}' is not a valid purpose; use one of {', '.join(files_db.PURPOSES)}.", param="purpose"
            )

        def run() -> FileObject:
            if purpose == "batch" and self.settings is not None:
                self._check_batch(data)
            with self.store.session() as s:
                record = files_db.create_file(
                    s, self.blobs, data, project_id=principal.project_id, purpose=purpose, filename=filename
                )
                return FileObject.of(record)

        return await asyncio.to_thread(run)

    def _check_batch(self, data: IO[bytes]) -> None:
        """A batch input file is refused at upload (400 naming the line) rather than stored and failed later."""
        try:
            check_batch_file(iter(lambda: data.read(CHUNK), b""), settings=self.settings, endpoint=None)
        except FileValidationError as exc:
            raise InvalidRequest(f"Invalid batch input file: {exc}", param="file") from None
        finally:
            data.seek(0)

    async def list(
        self, principal: Principal, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> FileList:
        def run() -> FileList:
            with self.store.session() as s:
                rows, more = files_db.list_files(
                    s, project_id=principal.project_id, purpose=purpose, after=after, limit=limit, order=order
                )
                data = [FileObject.of(r) for r in rows]
            return FileList(
                data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
            )

        return await asyncio.to_thread(run)

    async def get(self, principal: Principal, file_id: str) -> FileObject:
        def run() -> FileObject:
            with self.store.session() as s:
                return FileObject.of(files_db.get_file(s, file_id, project_id=principal.project_id))

        return await asyncio.to_thread(run)

    async def delete(self, principal: Principal, file_id: str) -> FileDeleted:
        def run() -> None:
            with self.store.session() as s:
                files_db.delete_file(s, self.blobs, file_id, project_id=principal.project_id)

        await asyncio.to_thread(run)
        return FileDeleted(id=file_id)

    async def content(self, principal: Principal, file_id: str) -> tuple[AsyncIterator[bytes], str]:
        """The file's bytes in chunks (ownership is checked before the first byte) and the extension to save it as."""

        def find() -> tuple[str, str]:
            with self.store.session() as s:
                record = files_db.get_file(s, file_id, project_id=principal.project_id)
                return record.blob_key, ("csv" if record.purpose == "fine-tune-results" else "jsonl")

        key, extension = await asyncio.to_thread(find)
        handle = await asyncio.to_thread(self.blobs.open, key)
        return read_chunks(handle), extension
