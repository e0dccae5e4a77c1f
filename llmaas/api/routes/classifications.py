"""POST /v1/classifications (extension): a thin router over serving/classifications.py."""

from __future__ import annotations

from fastapi import APIRouter, Request

from llmaas.api.deps import CallDep
from llmaas.api.protocol.classifications import ClassificationRequest, ClassificationResponse
from llmaas.api.protocol.common import ERROR_RESPONSES
from llmaas.api.serving.classifications import classify
from llmaas.api.sse import until_disconnected

router = APIRouter(tags=["classifications"])


@router.post("/v1/classifications", response_model=ClassificationResponse, responses=ERROR_RESPONSES)
async def create_classification(body: ClassificationRequest, call: CallDep, request: Request) -> ClassificationResponse:
    """Classify texts: each label's probability as the model's answer (zero-shot, or fine-tuned on examples)."""
    return await until_disconnected(request, classify(body, call))
