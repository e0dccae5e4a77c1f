"""POST /v1/chat/completions: a thin router over serving/chat.py."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from llmaas.api.deps import CallDep
from llmaas.api.protocol.chat import ChatCompletion, ChatCompletionRequest
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.serving.chat import prepare_chat
from llmaas.api.sse import generation_response

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERROR_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, call: CallDep, request: Request) -> Response:
    """Create a chat completion (OpenAI-compatible; `stream: true` answers with server-sent events)."""
    return await generation_response(request, prepare_chat(body, call), body.stream)
