"""OpenAI's Batch API shapes: the create request and the `batch` object, field for field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmaas.api.protocol.common import ResponseModel, StrictModel
from llmaas.batches.input import ENDPOINTS
from llmaas.errors import InvalidRequest

MAX_METADATA = 16

Endpoint = Literal[ENDPOINTS]  # type: ignore[valid-type]


class BatchCreateRequest(StrictModel):
    input_file_id: str = Field(min_length=1, max_length=64, description="A file uploaded with purpose `batch`.")
    endpoint: Endpoint = Field(description="Every line's `url` must be this endpoint.")
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(None, max_length=MAX_METADATA)

    def check_metadata(self) -> None:
        for key, value in (self.metadata or {}).items():
            if len(key) > 64 or len(value) > 512:
                raise InvalidRequest(
                    "metadata keys are at most 64 characters and values at most 512.", param="metadata"
                )


class RequestCounts(ResponseModel):
    total: int
    completed: int
    failed: int


class BatchError(ResponseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(ResponseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None = None


class BatchList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
