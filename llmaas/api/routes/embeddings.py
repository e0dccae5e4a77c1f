"""POST /v1/embeddings: a thin router over serving/embeddings.py."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from llmaas.api.deps import CallDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.embeddings import EmbeddingList, EmbeddingRequest
from llmaas.api.serving.embeddings import create_embeddings
from llmaas.api.sse import until_disconnected

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingList, responses=ERROR_RESPONSES)
async def create_embedding(body: EmbeddingRequest, call: CallDep, request: Request) -> JSONResponse:
    """Create embeddings for text or token arrays (float or base64)."""
    result, headers = await until_disconnected(request, create_embeddings(body, call))
    return JSONResponse(result.model_dump(mode="json"), headers=headers)
