"""`/v1/files`: upload (multipart, size-capped while it streams), list, retrieve, content, delete."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from llmaas.api.body_limit import MULTIPART_OVERHEAD
from llmaas.api.deps import PrincipalDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.files import FileDeleted, FileList, FileObject
from llmaas.api.serving.files import FileService
from llmaas.errors import InvalidRequest, PayloadTooLarge
from llmaas.store.files import PURPOSES

router = APIRouter(tags=["files"], responses=ERROR_RESPONSES)
_CHARSET = re.compile(r";\s*charset\s*=\s*([^;\s]+)", re.IGNORECASE)


def get_files(request: Request) -> FileService:
    state = request.app.state
    return FileService(state.store, state.blobs, state.settings)


FilesDep = Annotated[FileService, Depends(get_files)]


async def _bounded(request: Request, cap: int) -> AsyncGenerator[bytes, None]:
    """The body as it arrives; 413 the moment it passes the cap (nothing past it is read)."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise PayloadTooLarge(f"The file is larger than the limit of {cap - MULTIPART_OVERHEAD} bytes.")
        yield chunk


UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


@router.post("/v1/files", openapi_extra=UPLOAD_SCHEMA)
async def upload_file(request: Request, principal: PrincipalDep, files: FilesDep) -> FileObject:
    """Upload a file (multipart: `file` and `purpose`)."""
    limit = request.app.state.settings.limits.max_upload_bytes
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest("Upload files as multipart/form-data with fields 'file' and 'purpose'.", param="file")
    # The parser decodes names and fields with the client's `charset`; codecs such as unicode_escape would make
    # strings that are not valid Unicode. Form fields are UTF-8 (what every client sends, usually implicitly).
    charset = _CHARSET.search(content_type)
    if charset is not None and charset.group(1).strip('"').lower().replace("_", "-") not in (
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
    ):
        raise InvalidRequest("Multipart form fields must be UTF-8 (charset=utf-8, or no charset).", param="file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.")
    parser = MultiPartParser(request.headers, _bounded(request, limit + MULTIPART_OVERHEAD), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"Invalid multipart body: {str(exc)[:100]}", param="file") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.")
        upload.file.seek(0)
        return await files.upload(principal, purpose=purpose, filename=upload.filename, data=upload.file)
    finally:
        await form.close()


@router.get("/v1/files")
async def list_files(
    principal: PrincipalDep,
    files: FilesDep,
    purpose: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> FileList:
    """List this project's files."""
    return await files.list(principal, purpose=purpose, after=after, limit=limit, order=order)


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, principal: PrincipalDep, files: FilesDep) -> FileObject:
    """Retrieve a file object."""
    return await files.get(principal, file_id)


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, principal: PrincipalDep, files: FilesDep) -> StreamingResponse:
    """Download a file's bytes."""
    chunks, extension = await files.content(principal, file_id)
    # A download, never a page: browsers save it instead of rendering it. The name is our id (no client text in a
    # header); the id passed the ownership lookup, so it is one of ours.
    disposition = f'attachment; filename="{file_id}.{extension}"'
    return StreamingResponse(
        chunks, media_type="application/octet-stream", headers={"Content-Disposition": disposition}
    )


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, principal: PrincipalDep, files: FilesDep) -> FileDeleted:
    """Delete a file."""
    return await files.delete(principal, file_id)
