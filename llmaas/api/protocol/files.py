"""OpenAI's file objects and the bounded query parameters of `/v1/files` (the upload itself is multipart)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmaas.api.protocol.common import ResponseModel, RowObject
from llmaas.store.files import PURPOSES

Purpose = Literal[PURPOSES]  # type: ignore[valid-type]


class FileObject(RowObject):
    object: Literal["file"] = "file"
    id: str
    bytes: int
    created_at: int
    filename: str = Field(description="Display text only: never used as a path.")
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(ResponseModel):
    object: Literal["file"] = "file"
    id: str
    deleted: bool = True
