"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, events, checkpoints (OpenAI's shapes); the adapter (extension)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from llmaas.api.deps import PrincipalDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.fine_tuning import (
    FineTuningCheckpointList,
    FineTuningEventList,
    FineTuningJobCreate,
    FineTuningJobList,
    FineTuningJobObject,
)
from llmaas.api.serving.fine_tuning import FineTuningService

router = APIRouter(tags=["fine-tuning"], responses=ERROR_RESPONSES)

After = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=100)]


def get_service(request: Request) -> FineTuningService:
    state = request.app.state
    return FineTuningService(state.store, state.settings, state.blobs)


ServiceDep = Annotated[FineTuningService, Depends(get_service)]


@router.post("/v1/fine_tuning/jobs")
async def create_job(body: FineTuningJobCreate, principal: PrincipalDep, service: ServiceDep) -> FineTuningJobObject:
    """Create a fine-tuning job (LoRA)."""
    return await service.create(principal, body)


@router.get("/v1/fine_tuning/jobs")
async def list_jobs(
    principal: PrincipalDep, service: ServiceDep, after: After = None, limit: Limit = 20
) -> FineTuningJobList:
    """List this project's fine-tuning jobs, newest first."""
    return await service.list(principal, after=after, limit=limit)


@router.get("/v1/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, principal: PrincipalDep, service: ServiceDep) -> FineTuningJobObject:
    """Retrieve a fine-tuning job."""
    return await service.get(principal, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, principal: PrincipalDep, service: ServiceDep) -> FineTuningJobObject:
    """Cancel a fine-tuning job (a running one stops within seconds)."""
    return await service.cancel(principal, job_id)


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
async def list_events(
    job_id: str, principal: PrincipalDep, service: ServiceDep, after: After = None, limit: Limit = 20
) -> FineTuningEventList:
    """A fine-tuning job's events, newest first."""
    return await service.events(principal, job_id, after=after, limit=limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
async def list_checkpoints(
    job_id: str, principal: PrincipalDep, service: ServiceDep, after: After = None, limit: Limit = 10
) -> FineTuningCheckpointList:
    """A fine-tuning job's checkpoints (one per epoch), newest first."""
    return await service.checkpoints(principal, job_id, after=after, limit=limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/adapter")
async def download_adapter(job_id: str, principal: PrincipalDep, service: ServiceDep) -> StreamingResponse:
    """Download a succeeded job's LoRA adapter as a PEFT folder (zip), for PeftModel.from_pretrained (extension)."""
    chunks = await service.adapter(principal, job_id)
    # The name is the job id, which passed the ownership lookup (no client text in a header).
    disposition = f'attachment; filename="{job_id}-adapter.zip"'
    return StreamingResponse(chunks, media_type="application/zip", headers={"Content-Disposition": disposition})
