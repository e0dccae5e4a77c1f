"""`/v1/batches`: create, list, retrieve, cancel (OpenAI's Batch API); a thin router over serving/batches.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from llmaas.api.deps import PrincipalDep
from llmaas.api.protocol.batches import BatchCreateRequest, BatchList, BatchObject
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.serving.batches import BatchService

router = APIRouter(tags=["batches"], responses=ERROR_RESPONSES)


def get_service(request: Request) -> BatchService:
    state = request.app.state
    return BatchService(state.store, state.blobs, state.settings)  # the blob store the uploads went to


ServiceDep = Annotated[BatchService, Depends(get_service)]


@router.post("/v1/batches")
async def create_batch(body: BatchCreateRequest, principal: PrincipalDep, service: ServiceDep) -> BatchObject:
    """Create a batch from an uploaded input file (purpose `batch`)."""
    return await service.create(principal, body)


@router.get("/v1/batches")
async def list_batches(
    principal: PrincipalDep,
    service: ServiceDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    """List this project's batches, newest first."""
    return await service.list(principal, after=after, limit=limit)


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(batch_id: str, principal: PrincipalDep, service: ServiceDep) -> BatchObject:
    """Retrieve a batch."""
    return await service.get(principal, batch_id)


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, principal: PrincipalDep, service: ServiceDep) -> BatchObject:
    """Cancel a batch: it stops within seconds and keeps the output of the lines that finished."""
    return await service.cancel(principal, batch_id)
