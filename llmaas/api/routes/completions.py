"""POST /v1/completions: a thin router over serving/completions.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from llmaas.api.deps import CallDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.completions import Completion, CompletionRequest
from llmaas.api.serving.completions import prepare_completion
from llmaas.api.sse import generation_response

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def create_completion(body: CompletionRequest, call: CallDep, request: Request) -> Response:
    """Create a text completion (OpenAI's legacy API; `stream: true` answers with server-sent events)."""
    return await generation_response(request, prepare_completion(body, call), body.stream)
