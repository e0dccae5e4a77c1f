"""`/v1/batches` handlers, framework-free: create (validating the input file line by line), get, list, cancel.

Creating a batch reads its input file once (purpose `batch`, the caller's project's; any other is 404 like a random
id), checks every line (batches/input.py) and stores the lines with the batch, so the runner never reads the file
again. An input file that is not valid makes a batch that is `failed` at once with `errors` naming the line, as
OpenAI reports it. Database and blob work runs on worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from llmaas.api.protocol.batches import BatchCreateRequest, BatchErrors, BatchList, BatchObject, RequestCounts
from llmaas.batches import jobs as J
from llmaas.batches.input import check_batch_file
from llmaas.errors import InvalidRequest, Unavailable
from llmaas.store import batches as batches_db
from llmaas.store import files as files_db
from llmaas.store.batches import Batch
from llmaas.store.blobs import BlobStore
from llmaas.tenancy.types import Principal
from llmaas.training.files import FileValidationError

CHUNK = 1 << 20
T = TypeVar("T")


def batch_object(b: Batch) -> BatchObject:
    return BatchObject(
        id=b.id,
        endpoint=b.endpoint,
        errors=BatchErrors.model_validate(b.errors) if b.errors is not None else None,
        input_file_id=b.input_file_id,
        completion_window=b.completion_window,
        status=b.status,
        output_file_id=b.output_file_id,
        error_file_id=b.error_file_id,
        created_at=b.created_at,
        in_progress_at=b.in_progress_at,
        expires_at=b.expires_at,
        finalizing_at=b.finalizing_at,
        completed_at=b.completed_at,
        failed_at=b.failed_at,
        expired_at=b.expired_at,
        cancelling_at=b.cancelling_at,
        cancelled_at=b.cancelled_at,
        request_counts=RequestCounts(total=b.total, completed=b.completed, failed=b.failed),
        metadata=b.meta,
    )


class BatchService:
    def __init__(self, store: Any, blobs: BlobStore, settings: Any) -> None:
        if store is None:
            raise Unavailable("Batches need the database; this server runs without one.")
        self.store, self.blobs, self.settings = store, blobs, settings

    def _chunks(self, key: str) -> Iterator[bytes]:
        with self.blobs.open(key) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    async def create(self, principal: Principal, req: BatchCreateRequest) -> BatchObject:
        req.check_metadata()

        def run() -> BatchObject:
            with self.store.session() as s:
                record = files_db.get_file(s, req.input_file_id, project_id=principal.project_id, param="input_file_id")
                if record.purpose != "batch":
                    raise InvalidRequest("The input file must be uploaded with purpose 'batch'.", param="input_file_id")
                lines, error = None, None
                try:
                    lines = check_batch_file(
                        self._chunks(record.blob_key), settings=self.settings, endpoint=req.endpoint
                    )
                except FileValidationError as exc:
                    error = {
                        "code": "invalid_request",
                        "message": exc.problem,
                        "param": "input_file_id",
                        "line": exc.line,
                    }
                batch = J.create_batch(
                    s,
                    project_id=principal.project_id,
                    key_id=principal.key_id,
                    endpoint=req.endpoint,
                    input_file_id=record.id,
                    completion_window=req.completion_window,
                    metadata=req.metadata,
                    lines=lines,
                    error=error,
                )
                return batch_object(batch)

        return await asyncio.to_thread(run)

    async def get(self, principal: Principal, batch_id: str) -> BatchObject:
        return await self._run(
            lambda s: batch_object(batches_db.get_batch(s, batch_id, project_id=principal.project_id))
        )

    async def cancel(self, principal: Principal, batch_id: str) -> BatchObject:
        return await self._run(lambda s: batch_object(J.cancel_batch(s, batch_id, project_id=principal.project_id)))

    async def list(self, principal: Principal, *, after: str | None, limit: int) -> BatchList:
        def page(s: Any) -> BatchList:
            rows, more = batches_db.list_batches(s, project_id=principal.project_id, after=after, limit=limit)
            data = [batch_object(b) for b in rows]
            return BatchList(
                data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
            )

        return await self._run(page)

    async def _run(self, fn: Callable[[Any], T]) -> T:
        def work() -> T:
            with self.store.session() as s:
                return fn(s)

        return await asyncio.to_thread(work)
