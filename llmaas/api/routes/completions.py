"""POST /v1/completions: a thin router over serving/completions.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from llmaas.api.deps import CallDep
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.protocol.completions import Completion, CompletionRequest
from llmaas.api.serving.completions import prepare_completion
from llmaas.api.sse import sse_response, until_disconnected

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=Completion, responses=ERROR_RESPONSES)
async def create_completion(body: CompletionRequest, call: CallDep, request: Request) -> Response:
    """Create a text completion (OpenAI's legacy API; `stream: true` answers with server-sent events)."""
    run = await until_disconnected(request, prepare_completion(body, call))
    if body.stream:
        return sse_response(run.chunks(), run.headers, on_close=run.close)
    result = await until_disconnected(request, run.complete())
    return JSONResponse(result.model_dump(mode="json"), headers=run.headers)
